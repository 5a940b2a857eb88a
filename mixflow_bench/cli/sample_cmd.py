"""`mixflow-bench sample`: sample a recipe's model, or any zoo/toy model, to an ADM npz or a PNG grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mixflow_bench.choices import RegistryChoice
from mixflow_bench.cli.common import (
    console,
    fast_path_warning,
    warn,
    weight_warnings,
    writable_dir,
)
from mixflow_bench.launch.options import launch_options, pop_launch_options
from mixflow_bench.samplers import guidance_kinds, sampler_names

# ``--fast``: the switches of the fast sampling path (mixflow_bench.sampling.fast); recipes default to the exact path.
FAST_SAMPLING = {"precision": "bf16", "attention": "sdpa", "compile": True}
# ``--fp8``: the fast path with the model's linears as FP8 matmuls (opt-in; CUDA compute capability 8.9 or newer).
FAST_FP8_SAMPLING = {**FAST_SAMPLING, "precision": "fp8"}


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


def _guidance(model_name: str, guidance: dict, kind: str | None, scale: float | None) -> dict:
    """The guidance section after ``--guidance KIND`` / ``--cfg SCALE``, with the model family's rules."""
    from mixflow_bench.recipes.families import apply_guidance
    from mixflow_bench.recipes.schema import GuidanceSection
    from mixflow_bench.recipes.validate import build_dataclass

    try:
        out = apply_guidance(model_name, guidance, kind=kind, scale=scale)
        return dataclasses.asdict(build_dataclass(GuidanceSection, out, "sample", "guidance"))
    except ValueError as err:  # names the field (RecipeError) or the model; one line, no traceback
        raise click.BadParameter(str(err), param_hint="--guidance/--cfg") from None


def _check_sampler(model: dict, sample: dict) -> None:
    """Refuse, in one line, a sampler or guidance the model cannot be sampled with (before anything is built)."""
    from mixflow_bench.samplers import compatibility_problem
    from mixflow_bench.sampling.models import get_spec

    spec = get_spec(model["name"], **(model.get("overrides") or {}))
    problem = compatibility_problem(sample["sampler"], spec, sample["guidance"]["kind"])
    if problem:
        raise click.UsageError(problem)


def _refused_fp8(fp8: bool, launcher_name: str) -> bool:
    """Whether ``--fp8`` will be refused here (a local run on a device without FP8 matmuls)."""
    if not fp8 or launcher_name != "local":
        return False
    from mixflow_bench.models.float8 import float8_unsupported_reason
    from mixflow_bench.sampling.models import default_device

    return float8_unsupported_reason(default_device()) is not None


@click.command(name="sample")
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--model", "model_name", default=None, help="sample this model instead of a recipe's")
@click.option("--checkpoint", default=None, help="weights file or artifact name for --model")
@click.option("--random-init", is_flag=True, help="random weights (no download): checks shapes and plumbing")
@click.option("--num", type=int, default=None, help="number of images")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output .npz (ADM) or .png (grid)")
@click.option(
    "--cfg",
    type=float,
    default=None,
    help="guidance scale, with the model family's own rules (SiT: CFG on 3 of 4 channels; REPA: CFG inside "
    "t <= 0.7; RAE: autoguidance by DiT^DH-S); 1 turns guidance off",
)
@click.option(
    "--guidance",
    "guidance_kind",
    type=RegistryChoice(guidance_kinds),
    default=None,
    help="override the kind of guidance the model family uses (other settings: sample.guidance.KEY=VALUE)",
)
@click.option("--steps", type=int, default=None, help="sampler steps")
@click.option("--sampler", type=RegistryChoice(sampler_names), default=None,
              help="a registered sampler (mixflow_bench/samplers); default: the model's own")
@click.option("--seed", type=int, default=None,
              help="seed of the noise and labels; image i depends only on (seed, i), so shards and resumed runs "
              "give the same images (default: the recipe's, 0)")
@click.option("--batch-size", type=int, default=None,
              help="images per network call (memory and speed; the noise of image i does not depend on it)")
@click.option("--fast", is_flag=True, help="the fast path: bf16 autocast + torch.compile (see benchmarks/README.md)")
@click.option("--fp8", is_flag=True, help="the fast path with FP8 linears (sample.precision=fp8; opt-in, needs a CUDA "
              "GPU of compute capability 8.9+, e.g. H100/H200); implies --fast")  # fmt: skip
@launch_options
def command(recipe, overrides, model_name, checkpoint, random_init, num, out, cfg, guidance_kind, steps, sampler, seed,
            batch_size, fast, fp8, **kwargs) -> None:  # fmt: skip
    """Sample RECIPE or --model NAME (with KEY.PATH=VALUE overrides) to --out x.npz | x.png.

    The model's own sampling rules (its entry in mixflow_bench/models/zoo.py) apply unless set explicitly;
    model.overrides.KEY=VALUE passes architecture settings to --model (e.g. a small config for a smoke test).
    """
    from mixflow_bench.launch import get_launcher
    from mixflow_bench.launch.tasks import Task
    from mixflow_bench.recipes.loader import parse_overrides
    from mixflow_bench.recipes.schema import ModelSection, SampleSection

    launcher_name, nproc, slurm = pop_launch_options(kwargs)
    if model_name is not None and recipe is not None and "=" in recipe:  # --model NAME KEY=VALUE ...
        recipe, overrides = None, (recipe, *overrides)
    if (recipe is None) == (model_name is None):
        raise click.UsageError("give either a RECIPE or --model NAME")
    slurm_section = None
    if recipe is not None:
        from mixflow_bench.recipes.loader import load_recipe

        r = load_recipe(recipe, parse_overrides(overrides))
        if r.sample is None:
            raise click.UsageError(f"recipe {r.name} has no sample: section")
        model = dataclasses.asdict(r.model)
        sample = dataclasses.asdict(r.sample)
        slurm_section = r.slurm
        name = r.name
    else:
        from mixflow_bench.recipes.families import merge_defaults
        from mixflow_bench.recipes.validate import build_dataclass
        from mixflow_bench.sampling.models import get_spec

        get_spec(model_name)  # an unknown name fails here, with the valid names
        given_overrides = parse_overrides(overrides)
        raw = merge_defaults(model_name, given_overrides.get("sample", {}))  # the zoo entry's sampling rules
        sample = dataclasses.asdict(build_dataclass(SampleSection, raw, f"--model {model_name}", "sample"))
        raw_model = {**given_overrides.get("model", {}), "name": model_name, "checkpoint": checkpoint}
        model = dataclasses.asdict(build_dataclass(ModelSection, raw_model, f"--model {model_name}", "model"))
        name = model_name
    given = {"num": num, "steps": steps, "sampler": sampler, "seed": seed, "batch_size": batch_size}
    for key, value in given.items():
        if value is not None:
            sample[key] = value
    if num is None and recipe is None:
        sample["num"] = 8
    if fast or fp8:
        sample.update(FAST_FP8_SAMPLING if fp8 else FAST_SAMPLING)
    if guidance_kind is not None or cfg is not None:
        sample["guidance"] = _guidance(model["name"], sample["guidance"], guidance_kind, cfg)
    sample["shard_size"] = min(sample["shard_size"], sample["num"])
    _check_sampler(model, sample)
    if not _refused_fp8(fp8, launcher_name):  # a run that will be refused gets its one error line, no warnings
        for message in weight_warnings(model["name"], model.get("checkpoint"), random_init, recipe):
            warn(message)
        if (message := fast_path_warning(fast or fp8, launcher_name)) is not None:
            warn(message)

    out = out or Path(f"{name}-samples.npz")
    if out.suffix not in (".npz", ".png"):
        raise click.UsageError(f"--out must end in .npz or .png, got {out}")
    npz = out if out.suffix == ".npz" else out.with_suffix(".npz")
    writable_dir(npz.parent.absolute(), "--out")
    task = Task("sample", {"model": model, "sample": sample, "out": str(npz), "random_init": random_init},
                name=f"sample-{name}")  # fmt: skip
    from mixflow_bench.launch.tasks import LaunchError

    try:
        launcher = get_launcher(launcher_name, run_dir=npz.parent, slurm_section=slurm_section, slurm_overrides=slurm,
                                nproc=nproc)  # fmt: skip
        launcher.run(task)
    except (LaunchError, ValueError) as e:  # a failed or lost job (one line naming it and its log), or bad settings
        # found while building the model or sampler (a K mismatch, a checkpoint of another resolution)
        raise click.ClickException(str(e)) from e
    if out.suffix == ".png":
        save_grid(npz, out)
    console.print(f"[green]wrote[/] {out} ({sample['num']} images, {sample['sampler']} {sample['steps']} steps)")
