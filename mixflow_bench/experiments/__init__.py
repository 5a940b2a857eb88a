"""Registered experiments: the studies that run as one unit of work rather than the pipeline's
download -> train -> sample -> eval -> table stages, each selected by its recipe section.

``reproduce`` takes an experiment by name from :data:`EXPERIMENTS` and runs it through :func:`run_experiment`:
with a manifest in ``<run>/manifests/experiment.json`` (the settings the outputs were made with), so a rerun with
the same settings skips finished work and a rerun with other settings overwrites it only with ``--force``; each
experiment says which launchers it can use (all run in this process: ``local``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow_bench.recipes.schema import Recipe


@dataclass(frozen=True)
class Experiment:
    """One registered experiment: how to find it, describe it, run it and what it writes."""

    name: str
    matches: Callable[[Recipe], bool]
    describe: Callable[[Recipe, dict[str, Any]], str]  # one line for --plan
    run: Callable[[Recipe, Path, dict[str, Any]], Any]  # (recipe, output folder, options)
    outputs: tuple[str, ...]  # files under the output folder that mark it finished
    device: str = "cpu"  # cpu: anywhere; cuda: needs a CUDA device
    launchers: tuple[str, ...] = field(default=("local",))


def _mixflow_study(recipe: Recipe, out: Path, options: dict[str, Any]) -> Any:
    from mixflow_bench.toy.study import run_study

    return run_study(recipe, out, gammas=options.get("gammas") or None, seeds=options.get("seeds"),
                     console=options.get("console"))  # fmt: skip


def _gmflow_study(recipe: Recipe, out: Path, options: dict[str, Any]) -> Any:
    from mixflow_bench.toy.gmflow_study import run_gmflow_study

    return run_gmflow_study(recipe, out, seeds=options.get("seeds"), console=options.get("console"))


def _mixed_source(recipe: Recipe, out: Path, options: dict[str, Any]) -> Any:
    from mixflow_bench.toy.mixed_source_study import run_mixed_source_study

    return run_mixed_source_study(recipe, out, seeds=options.get("seeds"), console=options.get("console"))


def _regime(recipe: Recipe, out: Path, options: dict[str, Any]) -> Any:
    from mixflow_bench.experiments.regime import run_regime_study

    return run_regime_study(recipe, out, console=options.get("console"))


def _shapes(recipe: Recipe, out: Path, options: dict[str, Any]) -> Any:
    from mixflow_bench.experiments.shapes import ShapesStudyConfig, run_shapes_study

    return run_shapes_study(ShapesStudyConfig(**recipe.image_study), out, options.get("inception_weights"), "cuda")


def _describe_study(recipe: Recipe, options: dict[str, Any]) -> str:
    st = recipe.study
    what = (f"K = {st.components} and a flow-matching baseline" if st.kind == "gmflow"
            else "baseline, fm-control, fm-beta and MixFlow post-training")  # fmt: skip
    return (f"small CPU study ({st.kind}), {what}, {st.baseline_steps} steps per model, seeds "
            f"{options.get('seeds') or st.seeds}, NFE {st.eval_steps}; no GPU-hours")  # fmt: skip


def _describe_mixed_source(recipe: Recipe, options: dict[str, Any]) -> str:
    from mixflow_bench.toy.mixed_source_study import variants_of

    n = len(variants_of(recipe)) * len(options.get("seeds") or recipe.mixed_source.seeds)
    return f"{n} CPU training runs of {recipe.mixed_source.steps} steps (no GPU-hours)"


def _describe_regime(recipe: Recipe, options: dict[str, Any]) -> str:
    r = recipe.regime
    return (f"regime study on the CPU: widths {r.widths} x lengths {list(zip(r.base_steps, r.posttrain_steps))} x "
            f"gamma {r.gammas} x NFE {r.eval_steps}, seeds {r.seeds}; no GPU-hours")  # fmt: skip


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("mixflow-study", lambda r: r.study is not None and r.study.kind == "mixflow", _describe_study,
                   _mixflow_study, ("study.json",)),
        Experiment("gmflow-study", lambda r: r.study is not None and r.study.kind == "gmflow", _describe_study,
                   _gmflow_study, ("study.json",)),
        Experiment("mixed-source", lambda r: r.mixed_source is not None, _describe_mixed_source, _mixed_source,
                   ("study.json",)),
        Experiment("regime", lambda r: r.regime is not None, _describe_regime, _regime, ("regime.json",)),
        Experiment("shapes", lambda r: r.image_study is not None,
                   lambda r, o: "GPU shapes study (SiT on procedural 32x32 shapes), one CUDA device", _shapes,
                   ("shapes_study.json",), device="cuda"),
    )
}  # fmt: skip


def experiment_of(recipe: Recipe) -> Experiment | None:
    """The registered experiment a recipe's sections select (None: a pipeline recipe)."""
    found = [e for e in EXPERIMENTS.values() if e.matches(recipe)]
    return found[0] if found else None


class ExperimentError(ValueError):
    """A request an experiment cannot honour (one line for the user)."""


def experiment_settings(recipe: Recipe, options: dict[str, Any]) -> dict[str, Any]:
    """What the outputs depend on: the recipe's sections and the run options (not its prose)."""
    settings = {k: v for k, v in recipe.to_dict().items() if k not in ("description", "notes", "source", "reported")}
    return {"recipe": settings, "options": {k: v for k, v in options.items() if k in ("gammas", "seeds")}}


def run_experiment(
    recipe: Recipe,
    experiment: Experiment,
    out: Path,
    options: dict[str, Any],
    *,
    launcher: str = "local",
    force: bool = False,
) -> str:
    """Run ``experiment`` into ``out`` unless its manifest says the same settings finished there; returns
    ``"skipped"`` or ``"ran"``. Raises :class:`ExperimentError` for a launcher it cannot use and for finished
    work of other settings without ``force``."""
    from mixflow_bench.pipeline.manifest import ManifestStore

    if launcher not in experiment.launchers:
        raise ExperimentError(
            f"{recipe.name}: the {experiment.name} experiment runs in this process; --launcher {launcher} does not "
            f"apply to it (use --launcher {experiment.launchers[0]})"
        )
    out = Path(out)
    store = ManifestStore(out)
    settings = experiment_settings(recipe, options)
    outputs = [out / name for name in experiment.outputs]
    status = store.status("experiment", settings, {}, outputs)
    if status == "done":
        return "skipped"
    if status == "changed" and not force:
        changes = "; ".join(store.changes("experiment", settings, {})) or "settings"
        raise ExperimentError(
            f"{out} holds a finished {experiment.name} run of other settings ({changes}); pass --force to "
            "overwrite it, or use another --run-dir"
        )
    experiment.run(recipe, out, options)
    store.write("experiment", settings, {}, outputs)
    return "ran"
