"""Drive a recipe's stages: show the plan, skip what is up to date, run the rest through a launcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mixflow_bench.errors import SettingError, UnknownNameError, UserError, close_names
from mixflow_bench.pipeline.estimate import ASSUMPTIONS
from mixflow_bench.pipeline.manifest import ManifestStore
from mixflow_bench.pipeline.stages import STAGE_ORDER, Stage, build_stages, remove_stale
from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.recipes.validate import RecipeError
from mixflow_bench.runs import run_dir as run_dir_of

STATUS_STYLE = {"done": "green", "missing": "yellow", "changed": "magenta", "extend": "cyan", "blocked": "dim"}


class DestructiveChangeError(UserError, ValueError):
    """Rerunning a stage would delete finished work, and ``force`` was not given."""


def load_pipeline_recipe(recipe_ref: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe of a full pipeline, its model name checked against the model registry (a clear error early,
    before any stage runs)."""
    from mixflow_bench.sampling.models import get_spec

    recipe = load_recipe(recipe_ref, overrides)
    try:
        get_spec(recipe.model.name)
    except UnknownNameError as exc:
        raise RecipeError(recipe.source or recipe_ref, "model.name", str(exc)) from None
    return recipe


def plan(recipe_ref: str, overrides: dict[str, Any] | None = None, run_dir: Path | None = None):
    """(recipe, run_dir, [(stage, status)]) without running anything."""
    recipe = load_pipeline_recipe(recipe_ref, overrides)
    run_dir = Path(run_dir) if run_dir else run_dir_of(recipe.name)
    store = ManifestStore(run_dir)
    stages = build_stages(recipe, run_dir, recipe_ref, overrides or {})
    return recipe, run_dir, [(s, store.status(s.name, s.settings, s.inputs, s.outputs, s.extendable)) for s in stages]


def data_row(recipe: Recipe) -> tuple[str, str, str, str, float | None] | None:
    """The latent cache a training recipe reads: (status, what, path, size note, encoding GPU-h), or None."""
    from mixflow_bench.pipeline.estimate import latent_cache_estimate

    data = recipe.data
    if recipe.train is None or data is None or data.source != "latent-cache" or not data.encoder:
        return None
    present = data.path is not None and (Path(data.path) / "manifest.json").exists()
    resolution = data.resolution
    flips = 2 if data.hflip else 1
    estimate = latent_cache_estimate(data.encoder, resolution, flips=flips) if resolution else None
    if estimate is None:
        return "done" if present else "missing", f"{data.encoder} latents", data.path or "-", "size unknown", None
    size, hours = estimate
    orientations = "original + mirror" if flips == 2 else "original only (no flips)"
    what = f"ImageNet-1k {data.encoder} @ {resolution}, {orientations}, fp32: {size / 1e9:,.0f} GB on disk"
    how = f"mixflow-bench data prepare --recipe {recipe.name} --source IMAGENET/train"
    return "done" if present else "missing", what, data.path or "-", how, hours


def remaining_gpu_hours(rows: list[tuple[Stage, str]], data: tuple | None = None) -> tuple[dict[str, float], set[str]]:
    """GPU-hours left to run per GPU type (``{"H100": 2.3, "H200": 1.4}``), and the types that lack an estimate
    for some stage that needs GPU time (their total is a lower bound)."""
    totals = dict.fromkeys((g for stage, _ in rows for g in stage.gpu_hours_by_type), 0.0)
    partial: set[str] = set()
    if data is not None and data[4] and data[0] != "done":  # the encoder was measured on an H100: used for every type
        for gpu in list(totals) or ["H100"]:
            totals[gpu] = totals.get(gpu, 0.0) + data[4]
    for stage, status in rows:
        if stage.gpu_hours_by_type and status != "done":
            for gpu in totals:
                if gpu in stage.gpu_hours_by_type:
                    totals[gpu] += stage.gpu_hours_by_type[gpu]
                else:
                    partial.add(gpu)
    return totals, partial


def plan_table(
    recipe_name: str, rows: list[tuple[Stage, str]], data: tuple | None = None, width: int | None = None
) -> Table:
    """The stages with their status and GPU-hour estimates, one per measured GPU type (``H100 ~2.3 · H200 ~1.4``),
    and what remains to run on each; one field a line where a row a line does not fit ``width`` columns."""
    from mixflow_bench.terminal import fitted

    cells = []
    if data is not None:
        status, what, path, how, hours = data
        gpu = "-" if hours is None else f"~{hours:,.1f} (encoder measured)"
        cells.append(["data", f"[{STATUS_STYLE.get(status, '')}]{status}", f"{what} ({how})", path, gpu,
                      "H100 encoder throughput, benchmarks/results/ (measured)"])  # fmt: skip
    for stage, status in rows:
        gpu = " · ".join(f"{name} ~{h:,.1f}" for name, h in stage.gpu_hours_by_type.items()) or "-"
        outputs = ", ".join(p.name for p in stage.outputs) or "-"
        cells.append([stage.name, f"[{STATUS_STYLE.get(status, '')}]{status}", stage.note, outputs, gpu,
                      stage.gpu_basis or "-"])  # fmt: skip
    totals, partial = remaining_gpu_hours(rows, data)
    remaining = " · ".join(f"{g} ~{h:,.1f}" + ("+" if g in partial else "") for g, h in totals.items()) or "~0.0"
    note = "+: a stage has no estimate on that GPU type" if partial else ""
    cells.append(["[bold]remaining", "", "", "", f"[bold]{remaining}", note])
    columns = ["stage", "status", "what", "outputs", "est. GPU-h", "estimate basis"]
    table = fitted(f"reproduce {recipe_name}", columns, cells, width)
    table.caption = f"GPU-h are ESTIMATES ({ASSUMPTIONS})"
    return table


def run_stage(stage: Stage, launcher: Any, store: ManifestStore, console: Console) -> None:
    if stage.local is not None:
        stage.local()
    elif launcher.name == "slurm":
        # every task of the stage as its own job (one Slurm task each unless the stage is distributed), all in
        # the queue at once; a job already doing a task (submitted before this process) is waited on instead
        def echo(line: str) -> None:  # job names and log paths are not markup
            console.print(line, markup=False, highlight=False)

        jobs = [launcher.start(t, stage.name, distributed=stage.distributed, echo=echo) for t in stage.tasks]
        for job in jobs:
            launcher.wait(job, echo=echo)
    else:
        for task in stage.tasks:
            use = launcher
            if launcher.name == "torchrun" and not stage.distributed:
                from mixflow_bench.launch.local import LocalLauncher

                use = LocalLauncher()
            use.run(task)
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name} finished without writing {missing}")
    store.write(stage.name, stage.settings, stage.inputs, stage.outputs)


def reproduce(
    recipe_ref: str,
    *,
    overrides: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    launcher: Any = None,
    only_stage: str | None = None,
    console: Console | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Run every stage that is not up to date (or only ``only_stage``); returns {stage: what happened}.

    A stage whose settings or inputs changed since it finished is redone only with ``force`` (its outputs are
    deleted first, and the console says which); training whose only change is more steps continues instead.
    """
    console = console or Console()
    if launcher is None:
        from mixflow_bench.launch.local import LocalLauncher

        launcher = LocalLauncher()
    recipe = load_pipeline_recipe(recipe_ref, overrides)
    run_dir = Path(run_dir) if run_dir else run_dir_of(recipe.name)
    store = ManifestStore(run_dir)
    names = [s.name for s in build_stages(recipe, run_dir, recipe_ref, overrides or {})]
    if only_stage is not None and only_stage not in names:
        hint = close_names(only_stage, names)
        raise SettingError(f"recipe {recipe.name} has no stage {only_stage!r}{hint} (stages: {', '.join(names)})")
    outcome: dict[str, str] = {}
    for name in names:
        if only_stage is not None and name != only_stage:
            continue
        # rebuilt each time: a stage's inputs are the outputs of the stages before it
        stage = next(s for s in build_stages(recipe, run_dir, recipe_ref, overrides or {}) if s.name == name)
        status = store.status(stage.name, stage.settings, stage.inputs, stage.outputs, stage.extendable)
        if status == "done":
            console.print(f"[green]✓[/] {name}: up to date, skipped")
            outcome[name] = "skipped"
            continue
        if status == "blocked":
            raise RuntimeError(f"stage {name} cannot run: an input is missing ({stage.inputs}); run earlier stages")
        if status in ("changed", "extend"):
            running = launcher.running_for(name) if hasattr(launcher, "running_for") else []
            if running:  # a job of its earlier settings still writes into the outputs this run would change
                raise RuntimeError(f"stage {name} {status}: Slurm job(s) {', '.join(running)} of its earlier "
                                   f"settings are still queued or running; wait for them or scancel them first")
        if status == "extend":
            console.print(f"[cyan]↻[/] {name}: continuing the finished run ({stage.note}); nothing is deleted")
        if status == "changed":
            changes = "; ".join(store.changes(stage.name, stage.settings, stage.inputs)) or "settings"
            doomed = [str(p) for p in stage.cleanup if p.exists()]
            if doomed and not force:
                raise DestructiveChangeError(
                    f"stage {name} finished before with other settings or inputs ({changes}); running it again "
                    f"deletes {', '.join(doomed)}. Pass --force to delete and rerun, or use another --run-dir"
                )
            console.print(f"[magenta]↻[/] {name}: changed ({changes}); deleting {', '.join(doomed) or 'nothing'}")
            remove_stale(stage)
        console.print(f"[bold]▶[/] {name} ({launcher.name}) {stage.note}")
        run_stage(stage, launcher, store, console)
        outcome[name] = "ran"
    return outcome


__all__ = ["STAGE_ORDER", "plan", "plan_table", "reproduce"]
