"""`mixflow-bench sample`: sample a recipe's model, or any zoo/toy model, to an ADM npz or a PNG grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mixflow_bench.cli.common import console
from mixflow_bench.launch.options import launch_options, pop_launch_options

# ``--fast``: the switches of the fast sampling path (mixflow_bench.sampling.fast); recipes default to the exact path.
FAST_SAMPLING = {"precision": "bf16", "attention": "sdpa", "compile": True}


def _overrides(items: tuple[str, ...]) -> dict:
    from mixflow_bench.recipes.loader import _merge, parse_override

    merged: dict = {}
    for item in items:
        merged = _merge(merged, parse_override(item))
    return merged


def save_grid(npz: Path, png: Path) -> None:
    import numpy as np
    from PIL import Image

    with np.load(npz) as data:
        images = data["arr_0"]
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = images.shape[1:3]
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    tmp = png.with_name(f".{png.name}.tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(png)


@click.command(name="sample")
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--model", "model_name", default=None, help="sample this model instead of a recipe's")
@click.option("--checkpoint", default=None, help="weights file or artifact name for --model")
@click.option("--random-init", is_flag=True, help="random weights (no download): checks shapes and plumbing")
@click.option("--num", type=int, default=None, help="number of images")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output .npz (ADM) or .png (grid)")
@click.option("--cfg", type=float, default=None, help="classifier-free guidance scale")
@click.option("--steps", type=int, default=None, help="sampler steps")
@click.option("--sampler", type=click.Choice(["sde", "euler", "heun", "dopri5", "rae-euler", "manual-heun", "rk45"]),
              default=None)
@click.option("--seed", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--fast", is_flag=True, help="the fast path: bf16 autocast + torch.compile (see benchmarks/README.md)")
@launch_options
def command(recipe, overrides, model_name, checkpoint, random_init, num, out, cfg, steps, sampler, seed, batch_size,
            fast, **kwargs) -> None:  # fmt: skip
    """Sample RECIPE (with KEY.PATH=VALUE overrides) or --model NAME to --out x.npz | x.png."""
    from mixflow_bench.launch import get_launcher
    from mixflow_bench.launch.tasks import Task
    from mixflow_bench.recipes.schema import GuidanceSection, ModelSection, SampleSection

    launcher_name, nproc, slurm = pop_launch_options(kwargs)
    if (recipe is None) == (model_name is None):
        raise click.UsageError("give either a RECIPE or --model NAME")
    slurm_section = None
    if recipe is not None:
        from mixflow_bench.recipes.loader import load_recipe

        r = load_recipe(recipe, _overrides(overrides))
        if r.sample is None:
            raise click.UsageError(f"recipe {r.name} has no sample: section")
        model = dataclasses.asdict(r.model)
        sample = dataclasses.asdict(r.sample)
        slurm_section = r.slurm
        name = r.name
    else:
        from mixflow_bench.sampling.models import get_spec

        spec = get_spec(model_name)
        defaults = dict(spec.sampler_defaults or {})
        defaults.setdefault("sampler", "euler")
        defaults.setdefault("steps", 50)
        fields = {f.name for f in dataclasses.fields(SampleSection)}
        plain = {k: v for k, v in defaults.items() if k in fields and k != "guidance"}
        sample = dataclasses.asdict(SampleSection(**plain))
        if isinstance(defaults.get("guidance"), dict):
            sample["guidance"] = dataclasses.asdict(GuidanceSection(**defaults["guidance"]))
        model = dataclasses.asdict(ModelSection(name=model_name, checkpoint=checkpoint))
        name = model_name
    given = {"num": num, "steps": steps, "sampler": sampler, "seed": seed, "batch_size": batch_size}
    for key, value in given.items():
        if value is not None:
            sample[key] = value
    if num is None and recipe is None:
        sample["num"] = 8
    if fast:
        sample.update(FAST_SAMPLING)
    if cfg is not None:
        sample["guidance"] = {**sample["guidance"], "kind": "cfg" if cfg != 1.0 else "none", "scale": cfg}
    sample["shard_size"] = min(sample["shard_size"], sample["num"])

    out = out or Path(f"{name}-samples.npz")
    if out.suffix not in (".npz", ".png"):
        raise click.UsageError(f"--out must end in .npz or .png, got {out}")
    npz = out if out.suffix == ".npz" else out.with_suffix(".npz")
    task = Task("sample", {"model": model, "sample": sample, "out": str(npz), "random_init": random_init},
                name=f"sample-{name}")  # fmt: skip
    launcher = get_launcher(launcher_name, run_dir=npz.parent, slurm_section=slurm_section, slurm_overrides=slurm,
                            nproc=nproc)  # fmt: skip
    from mixflow_bench.models.songunet import CheckpointMismatch

    try:
        launcher.run(task)
    except CheckpointMismatch as exc:  # e.g. a released checkpoint of another resolution
        raise click.ClickException(str(exc)) from exc
    if out.suffix == ".png":
        save_grid(npz, out)
    console.print(f"[green]wrote[/] {out} ({sample['num']} images, {sample['sampler']} {sample['steps']} steps)")
