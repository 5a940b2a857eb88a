"""`mixflow-bench analyze`: analyses of trained models (the Slow-Flow curve, trajectory curvature)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from mixflow_bench.cli.common import console
from mixflow_bench.runs import run_dir


@click.group(name="analyze")
def command() -> None:
    """Analyses of trained models."""


def _parse_checkpoint(value: str) -> tuple[str, Path]:
    label, sep, path = value.partition("=")
    if not sep or not label or not path:
        raise click.BadParameter(f"expected LABEL=PATH, got {value!r}", param_hint="--checkpoint")
    return label, Path(path)


def _parse_shape(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise click.BadParameter(f"expected positive integers like '8,8', got {value!r}", param_hint="--data-shape")
    return shape


@command.command(name="slow-flow")
@click.option("--dataset", type=click.Choice(["toy2d", "digits"]), required=True, help="Reference data.")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="LABEL=PATH",
              help="A ToyVelocityMLP checkpoint (torch.save); repeat for several models.")
@click.option("--velocity-exact", is_flag=True, help="Also analyse the exact velocity field (toy2d only).")
@click.option("--steps", default=16, show_default=True, type=click.IntRange(1), help="Euler steps.")
@click.option("--num", default=500, show_default=True, type=click.IntRange(1), help="Trajectories per model.")
@click.option("--data-shape", default=None, help="Data shape when the checkpoint lacks model_kwargs (e.g. 8,8).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the start noise and labels.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default runs/analysis/slow-flow-<dataset>).")
def slow_flow(
    dataset: str,
    checkpoints: tuple[str, ...],
    velocity_exact: bool,
    steps: int,
    num: int,
    data_shape: str | None,
    seed: int,
    out_dir: Path | None,
) -> None:
    """Median nearest ground-truth time m(t) per sampling time t, per model, beside the estimator's null curve."""
    import torch
    from rich.table import Table

    from mixflow_bench.analysis.exact_velocity import ring_velocity
    from mixflow_bench.analysis.slow_flow import null_curve, plot_slow_flow, slow_flow_curve, summarize
    from mixflow_bench.analysis.toy_checkpoints import CheckpointError, load_toy_model, model_velocity
    from mixflow_bench.data.toy import load_digits_split, load_toy2d_split
    from mixflow_bench.flow.conventions import TimeConvention
    from mixflow_bench.progress import step_progress
    from mixflow_bench.results.records import write_json_atomic

    parsed = [_parse_checkpoint(c) for c in checkpoints]
    if not parsed and not velocity_exact:
        raise click.UsageError("give at least one --checkpoint LABEL=PATH or --velocity-exact")
    if velocity_exact and dataset != "toy2d":
        raise click.UsageError("--velocity-exact is available for --dataset toy2d only")
    labels_seen = [label for label, _ in parsed] + (["exact"] if velocity_exact else [])
    if len(set(labels_seen)) != len(labels_seen):
        raise click.UsageError(f"model labels must be distinct, got {labels_seen}")
    shape = _parse_shape(data_shape)

    if dataset == "toy2d":
        train, held, ring = load_toy2d_split()
    else:
        train, held = load_digits_split()
        ring = None
    default_shape = train.data_shape
    models = {}
    for label, path in parsed:
        try:
            model = load_toy_model(path, shape or default_shape)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from exc
        if model.data_shape != default_shape:
            raise click.ClickException(f"{path}: model data shape {model.data_shape} != {dataset} {default_shape}")
        g = torch.Generator().manual_seed(seed + 1)
        y = torch.randint(max(model.num_classes, 1), (num,), generator=g)
        models[label] = (model_velocity(model, y), model.convention)
    if velocity_exact:
        models["exact"] = (ring_velocity(ring), TimeConvention.DATA_AT_1)

    x0 = torch.randn(num, *default_shape, generator=torch.Generator().manual_seed(seed))
    reference = train.x.reshape(len(train), -1)
    summaries, times = {}, None
    with step_progress() as progress:
        task = progress.add_task("slow-flow curves", total=len(models) + 1, unit="curves")
        for label, (fn, conv) in models.items():
            curve = slow_flow_curve(fn, x0, reference, steps, conv)
            times = curve["t"]
            summaries[label] = summarize(curve)
            progress.advance(task)
        held_x = held.x[:num].reshape(min(num, len(held)), -1)
        null = summarize(null_curve(held_x, reference, torch.tensor(times), torch.Generator().manual_seed(seed + 2)))
        progress.advance(task)

    out_dir = out_dir or run_dir("analysis") / f"slow-flow-{dataset}"
    summary = {
        "analysis": "slow-flow", "dataset": dataset, "time_convention": "data-ward (t = 1 is data)",
        "steps": steps, "num_samples": num, "num_reference": len(reference), "num_heldout": len(held_x),
        "seed": seed, "checkpoints": {label: str(path) for label, path in parsed}, "models": summaries, "null": null,
    }
    json_path = write_json_atomic(out_dir / "slow_flow.json", summary)
    png_path = plot_slow_flow(summaries, null, out_dir / "slow_flow.png", f"Slow Flow ({dataset}, {steps} Euler steps)")

    table = Table(title="Median slowed time m(t)", caption=f"{dataset}, {steps} Euler steps, {num} samples")
    table.add_column("t", justify="right")
    for label in summaries:
        table.add_column(label, justify="right")
    table.add_column("null", justify="right", style="dim")
    for i, t in enumerate(times):
        cells = [f"{summaries[label]['percentiles']['50'][i]:.3f}" for label in summaries]
        table.add_row(f"{t:.3f}", *cells, f"{null['percentiles']['50'][i]:.3f}")
    console.print(table)
    console.print(f"wrote [bold]{json_path}[/bold] and [bold]{png_path}[/bold]")


def dataset_name(shape: tuple[int, ...]) -> str:
    return "toy2d (2)" if shape == (2,) else "digits (8x8 = 64)"


def _curvature_velocity(path: Path, shape: tuple[int, ...]):
    """A DATA_AT_1 velocity function from a mixed-source study checkpoint or a plain toy checkpoint."""
    import torch

    from mixflow_bench.analysis.toy_checkpoints import CheckpointError, infer_kwargs, load_toy_model, read_checkpoint
    from mixflow_bench.flow.conventions import TimeConvention
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP

    obj = read_checkpoint(path)
    state = obj.get("ema") or obj.get("model") if isinstance(obj, dict) else None
    prefix = "velocity.net."
    if isinstance(state, dict) and any(k.startswith(prefix) for k in state):  # a mixed-source study run
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        width = inner.get("input.weight", torch.empty(0, 0)).shape[-1]
        if width != math.prod(shape):
            raise click.ClickException(f"{path}: a model of {width}-dimensional data, not {dataset_name(shape)}")
        try:
            model = ToyVelocityMLP(**infer_kwargs(inner, shape))
            model.load_state_dict(inner, strict=True)
        except (KeyError, RuntimeError) as exc:
            first = str(exc).splitlines()[0]
            raise click.ClickException(f"{path}: not a mixed-source toy checkpoint ({first})") from exc
    else:
        try:
            model = load_toy_model(path, shape)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from exc
    if model.data_shape != shape:
        raise click.ClickException(f"{path}: model data shape {model.data_shape} != dataset shape {shape}")
    if model.convention is not TimeConvention.DATA_AT_1:
        raise click.ClickException(f"{path}: curvature is defined in DATA_AT_1 time; the model is {model.convention}")
    model.eval()

    def velocity(x, t):
        return model(x.float(), t.float(), torch.zeros(len(x), dtype=torch.long)).to(x.dtype)

    return velocity


@command.command(name="curvature")
@click.option("--dataset", type=click.Choice(["toy2d", "digits"]), required=True, help="Data shape of the models.")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="LABEL=PATH",
              help="A mixed-source study checkpoint (runs/<recipe>/seed<s>/<variant>/checkpoints/...) or a "
                   "ToyVelocityMLP checkpoint; repeat for several models.")
@click.option("--steps", default=128, show_default=True, type=click.IntRange(1), help="Euler steps (the paper: 128).")
@click.option("--num", default=1000, show_default=True, type=click.IntRange(1), help="Trajectories (x0 ~ N(0, I)).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the start noise.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default runs/analysis/curvature-<dataset>).")
def curvature_cmd(dataset: str, checkpoints: tuple[str, ...], steps: int, num: int, seed: int,
                  out_dir: Path | None) -> None:
    """Trajectory curvature as the κ-FC mixed-source paper defines it (Euler, per-element mean), with a PNG."""
    import torch
    from rich.table import Table

    from mixflow_bench.analysis.curvature import plot_curvature, summarize, trajectory_curvature
    from mixflow_bench.flow.counted_solvers import euler
    from mixflow_bench.results.records import write_json_atomic

    parsed = [_parse_checkpoint(c) for c in checkpoints]
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
        raise click.UsageError(f"model labels must be distinct, got {labels}")
    shape = (2,) if dataset == "toy2d" else (8, 8)
    x0 = torch.randn(num, *shape, generator=torch.Generator().manual_seed(seed))
    values, trajectories, summaries = {}, {}, {}
    for label, path in parsed:
        with torch.no_grad():
            sol = euler(_curvature_velocity(path, shape), x0, steps)
        values[label] = trajectory_curvature(sol.trajectory)
        summaries[label] = summarize(values[label])
        if shape == (2,):
            trajectories[label] = torch.stack(sol.trajectory)[:, :48]
    out_dir = out_dir or run_dir("analysis") / f"curvature-{dataset}"
    summary = {"analysis": "curvature", "dataset": dataset, "time_convention": "data_at_1 (t = 0 noise, t = 1 data)",
               "solver": f"euler, {steps} steps", "num_trajectories": num, "seed": seed,
               "checkpoints": {label: str(path) for label, path in parsed}, "models": summaries}
    json_path = write_json_atomic(out_dir / "curvature.json", summary)
    png_path = plot_curvature(values, out_dir / "curvature.png", f"Curvature ({dataset}, Euler {steps} steps)",
                              trajectories or None)
    table = Table(title="Trajectory curvature", caption=f"{dataset}, Euler {steps} steps, {num} trajectories")
    for col in ("model", "mean", "std"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for label, s in summaries.items():
        table.add_row(label, f"{s['mean_curvature']:.4g}", f"{s['std_curvature']:.3g}")
    console.print(table)
    console.print(f"wrote [bold]{json_path}[/bold] and [bold]{png_path}[/bold]")
