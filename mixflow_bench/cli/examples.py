"""Examples shown at the end of every command's ``--help`` (one home; ``cli/main.py`` attaches them).

Keys are command paths as typed after ``mixflow-bench``; tests/test_cli_help.py checks that every command has
examples and that every option an example uses exists.
"""

from __future__ import annotations

import click

EXAMPLES: dict[str, list[str]] = {
    "recipes list": ["mixflow-bench recipes list", "mixflow-bench recipes list | grep sit-xl"],
    "recipes show": ["mixflow-bench recipes show sit-xl-256-cfg"],
    "models list": ["mixflow-bench models list", "mixflow-bench models list --json models.json"],
    "train": [
        "mixflow-bench train tiny-digits",
        "mixflow-bench train sit-b-256 train.steps=1000 --run-dir runs/try",
        "mixflow-bench train sit-b-256 --launcher torchrun --nproc 8",
    ],
    "sample": [
        "mixflow-bench sample --model sit-xl-2 --num 16 --out grid.png",
        "mixflow-bench sample --model rae-dith-xl-256 --steps 25 --cfg 1.0 --out rae.npz",
        "mixflow-bench sample sit-xl-256-cfg sample.num=1000 --seed 1 --out sit.npz",
        "mixflow-bench sample --model sit-s-8 --random-init --num 4 --out check.png",
    ],
    "eval": [
        "mixflow-bench eval --samples sit.npz --ref adm-ref-imagenet256",
        "mixflow-bench eval --samples sit.npz --ref adm-ref-imagenet256 --metrics fid,is --json fid.json",
    ],
    "pack": ["mixflow-bench pack my_pngs/ samples.npz"],
    "table": [
        "mixflow-bench table",
        "mixflow-bench table --metrics fid --columns experiment,method",
        "mixflow-bench table --produced-only --csv results.csv",
        "mixflow-bench table --results results",
        "mixflow-bench table --update-committed",
    ],
    "reproduce": [
        "mixflow-bench reproduce tiny-digits",
        "mixflow-bench reproduce sit-xl-256-cfg --plan",
        "mixflow-bench reproduce toy2d digits --seeds 0,1",
        "mixflow-bench reproduce rae-256 --launcher slurm --partition gpu --time 240",
    ],
    "analyze curvature": [
        "mixflow-bench analyze curvature --dataset toy2d "
        "--checkpoint rf=runs/mixed-source-toy2d/seed0/rectified-flow/model.pt",
    ],
    "analyze slow-flow": [
        "mixflow-bench analyze slow-flow --dataset toy2d --checkpoint fm=runs/toy2d/seed0/baseline.pt --velocity-exact",
    ],
    "download": [
        "mixflow-bench download --list",
        "mixflow-bench download sit-xl-2-256 adm-ref-imagenet256",
        "mixflow-bench download --recipe rae-256",
    ],
    "data prepare": [
        "mixflow-bench data prepare --source /data/imagenet/train --recipe sit-b-256 --out cache/sdvae-256",
        "mixflow-bench data prepare --source /data/imagenet/val --reference --resolution 256 --out ref.npz",
    ],
    "data verify": ["mixflow-bench data verify cache/sdvae-256", "mixflow-bench data verify cache/sdvae-256 --json -"],
    "jobs": ["mixflow-bench jobs", "mixflow-bench jobs --run-dir runs/rae-256 --json jobs.json"],
}


def epilog(path: str) -> str | None:
    """The ``Examples:`` block of command ``path`` (click's ``\\b`` keeps its lines unwrapped)."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def attach(command: click.Command, path: str) -> None:
    """Give ``command`` and its subcommands their examples (where they have none of their own)."""
    if command.epilog is None:
        command.epilog = epilog(path)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            attach(sub, f"{path} {name}")
