"""The stages of ``mixflow-bench reproduce``: download -> train (post-training, and the flow-matching control) ->
sample (baseline, post-trained, control) -> eval -> table.

A :class:`Stage` names its settings, input files and output files; the :class:`ManifestStore` decides from them
whether it is done. Work runs through a launcher as :class:`~mixflow_bench.launch.tasks.Task` s (sampling on
torchrun or Slurm, training too for latent models); download and table run in this process.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow_bench.launch.tasks import Task
from mixflow_bench.pipeline.estimate import Estimate, sampling_estimates, short_gpu, training_estimates
from mixflow_bench.recipes.schema import ObjectiveSection, Recipe
from mixflow_bench.runs import records_dir
from mixflow_bench.sampling.models import TOY_MODELS, get_spec

CONTROL = "fm-control"  # flow matching with the base model's own time law (uniform for SiT/REPA)
TIME_LAW_CONTROL = "fm-beta"  # flow matching with the post-training's time law (MixFlow: Beta(2,1)), no slowing
CONTROLS = (CONTROL, TIME_LAW_CONTROL)
STAGE_ORDER = ("download", "train", f"train-{CONTROL}", f"train-{TIME_LAW_CONTROL}", "sample-baseline",
               "sample-posttrained", f"sample-{CONTROL}", f"sample-{TIME_LAW_CONTROL}", "eval", "table")  # fmt: skip
# the post-trained model: sample-posttrained
SAMPLE_STAGES = {"baseline": "sample-baseline", **{c: f"sample-{c}" for c in CONTROLS}}


@dataclass
class Stage:
    name: str
    settings: dict[str, Any]
    inputs: dict[str, Path | None]
    outputs: list[Path]
    tasks: list[Task] = field(default_factory=list)  # run through the launcher
    local: Callable[[], Any] | None = None  # run in this process instead
    distributed: bool = False  # may run on several processes (torchrun)
    gpu_hours: float | None = None  # the first GPU type's estimate
    gpu_hours_by_type: dict[str, float] = field(default_factory=dict)  # short GPU name (H100) -> estimate
    gpu_basis: str = ""  # which measurement the estimate comes from, and what is assumed
    cleanup: list[Path] = field(default_factory=list)  # what a changed rerun deletes (only with --force)
    note: str = ""
    # (old settings, new settings) -> True when the finished work can be continued rather than redone
    extendable: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None


# Settings that cannot change a stage's result: left out of its manifest key, so changing them keeps finished
# work. Sample i depends only on (seed, i), not on the batch it was drawn in or the shard it was written to; the
# checkpoint interval only decides which intermediate states are saved (every RNG state is in them).
RESULT_NEUTRAL = {"sample": ("batch_size", "shard_size"), "train": ("checkpoint_every",)}


def result_settings(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A recipe section's settings without those that cannot change the result (:data:`RESULT_NEUTRAL`)."""
    return {k: v for k, v in values.items() if k not in RESULT_NEUTRAL.get(section, ())}


def training_extends(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when ``new`` only raises ``train.steps`` over ``old``: training continues from its last checkpoint."""
    old, new = (json.loads(json.dumps(d, sort_keys=True, default=str)) for d in (old, new))  # tuples -> lists
    old_train, new_train = dict(old.get("train") or {}), dict(new.get("train") or {})
    if not old_train or not new_train or new_train.get("steps", 0) < old_train.get("steps", 0):
        return False
    old_train.pop("steps", None), new_train.pop("steps", None)
    return {**old, "train": old_train} == {**new, "train": new_train}


def is_toy(recipe: Recipe) -> bool:
    return recipe.model.name in TOY_MODELS


def posttrained_name(recipe: Recipe) -> str:
    """The post-trained variant's name: the method it is trained with (``train.objective.kind``)."""
    return recipe.train.objective.kind


def variants(recipe: Recipe, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Model sections to sample: ``baseline`` (the recipe's checkpoint), the post-trained model, and the
    equal-length flow-matching controls (``fm-control``, ``fm-beta``) the recipe has when it post-trains a
    checkpoint."""
    out: dict[str, dict[str, Any]] = {}
    model = dataclasses.asdict(recipe.model)
    if recipe.train is None or recipe.train.init == "checkpoint":
        out["baseline"] = model
    if recipe.train is not None:
        out[posttrained_name(recipe)] = {**model, "checkpoint": str(run_dir / "train" / "model.pt")}
        for name in controls(recipe):
            out[name] = {**model, "checkpoint": str(run_dir / f"train-{name}" / "model.pt")}
    return out


def method_and_variant(recipe: Recipe, name: str) -> tuple[str, str]:
    """(method, variant) of the pipeline's model ``name`` (:func:`variants`) for the results table: the released
    model's method is its zoo entry's; the trained one's the recipe's objective; a control's its own objective."""
    if name == "baseline":
        return get_spec(recipe.model.name).method, "released"
    control_kinds = {CONTROL: "control", TIME_LAW_CONTROL: "time-law-control"}
    if name in control_kinds:
        objective = {CONTROL: recipe.control, TIME_LAW_CONTROL: recipe.time_law_control}[name]
        return (objective.kind if objective is not None else "fm"), control_kinds[name]
    return recipe.train.objective.kind, ("post-trained" if recipe.train.init == "checkpoint" else "trained")


def controls(recipe: Recipe) -> dict[str, ObjectiveSection]:
    """The recipe's equal-length controls by variant name (``fm-control``: ``control``; ``fm-beta``:
    ``time_law_control``); none unless the recipe post-trains a checkpoint."""
    if recipe.train is None or recipe.train.init != "checkpoint":
        return {}
    found = {CONTROL: recipe.control, TIME_LAW_CONTROL: recipe.time_law_control}
    return {name: objective for name, objective in found.items() if objective is not None}


def has_control(recipe: Recipe) -> bool:
    return CONTROL in controls(recipe)


def control_overrides(objective: ObjectiveSection, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that turn the recipe's training into a control's: only the objective is replaced (and the
    time-law control dropped, which belongs to the post-training's objective)."""
    from mixflow_bench.merge import deep_merge

    return deep_merge(overrides, {"train": {"objective": dataclasses.asdict(objective)}, "time_law_control": None})


def control_training_stage(
    train: Stage, recipe: Recipe, run_dir: Path, overrides: dict[str, Any], name: str = CONTROL
) -> Stage:
    """The ``train`` stage again, for the control ``name``: the same checkpoint, data, steps, optimiser, batch
    and seed, the objective replaced by the control's, the outputs under ``train-<name>/``."""
    objective = controls(recipe)[name]
    folder = f"train-{name}"

    def moved(p: Path) -> Path:
        p = Path(p)
        return run_dir / folder / p.relative_to(run_dir / "train") if p.is_relative_to(run_dir / "train") else p

    control_train = dataclasses.replace(recipe.train, objective=objective)
    settings = copy.deepcopy(train.settings)
    settings["train"] = {**settings["train"], "objective": dataclasses.asdict(objective)}
    tasks = [Task(t.kind, {**t.args, "overrides": control_overrides(objective, t.args.get("overrides") or overrides),
                           "out_dir": str(moved(Path(t.args["out_dir"])))}, name=f"{recipe.name}-{folder}")
             for t in train.tasks]  # fmt: skip
    return dataclasses.replace(
        train, name=folder, settings=settings, outputs=[moved(p) for p in train.outputs], tasks=tasks,
        **_estimate(training_estimates(recipe.model.name, control_train)), cleanup=[moved(p) for p in train.cleanup],
        note=f"{name}: {objective.kind} objective, {objective.t_dist} times, otherwise as train",
    )  # fmt: skip


def _estimate(estimates: list[Estimate]) -> dict[str, Any]:
    """A stage's estimate fields: the first GPU type's hours, every GPU type's hours and every basis."""
    return {"gpu_hours": estimates[0].hours if estimates else None,
            "gpu_hours_by_type": {short_gpu(e.gpu): e.hours for e in estimates},
            "gpu_basis": " | ".join(e.label for e in estimates)}  # fmt: skip


def build_stages(recipe: Recipe, run_dir: Path, recipe_ref: str, overrides: dict[str, Any]) -> list[Stage]:
    run_dir = Path(run_dir)
    stages: list[Stage] = []
    toy = is_toy(recipe)

    # download
    artifacts: list[str] = []
    if not toy:
        from mixflow_bench.recipes.artifacts import artifacts_for_recipe

        artifacts = list(artifacts_for_recipe(recipe.to_dict()))

    def download() -> None:
        if artifacts:
            from mixflow_bench.hub import fetch

            for name in artifacts:
                fetch(name)
        if recipe.eval is not None and recipe.eval.reference_data is not None and recipe.sample is not None:
            from mixflow_bench.data.reference_images import ensure_reference

            ensure_reference(recipe.eval, recipe.name)

    note = f"{len(artifacts)} artifacts"
    stages.append(Stage("download", {"artifacts": artifacts}, {}, [], local=download, note=note))

    # train
    if recipe.train is not None:
        train_out = run_dir / "train" / "model.pt"
        init = recipe.model.checkpoint if recipe.train.init == "checkpoint" else None
        inputs = {"init": Path(init)} if init and Path(init).exists() else {}
        estimate = _estimate(training_estimates(recipe.model.name, recipe.train))
        stages.append(
            Stage(
                "train",
                {"model": dataclasses.asdict(recipe.model),
                 "train": result_settings("train", dataclasses.asdict(recipe.train)),
                 "data": dataclasses.asdict(recipe.data) if recipe.data else None},
                inputs,
                [train_out],
                tasks=[Task("train", {"recipe": recipe_ref, "overrides": overrides, "out_dir": str(train_out.parent)},
                            name=f"{recipe.name}-train")],
                distributed=True,  # DDP; toy models too (the multi-rank path is tested on them)
                **estimate,
                cleanup=[run_dir / "train"],
                note=f"{recipe.train.steps} steps x batch {recipe.train.batch_size}",
                extendable=training_extends,
            )
        )  # fmt: skip
        train_stage = stages[-1]
        for name in controls(recipe):
            stages.append(control_training_stage(train_stage, recipe, run_dir, overrides, name))

    # sampling
    sample_outputs: dict[str, Path] = {}
    if recipe.sample is not None:
        for variant, model in variants(recipe, run_dir).items():
            out = run_dir / "samples" / f"{variant}.npz"
            sample_outputs[variant] = out
            ckpt = model.get("checkpoint")
            inputs = {"checkpoint": Path(ckpt)} if ckpt and (variant != "baseline" or Path(ckpt).exists()) else {}
            stage_name = SAMPLE_STAGES.get(variant, "sample-posttrained")
            estimate = _estimate(sampling_estimates(recipe.model.name, recipe.sample))
            stages.append(
                Stage(
                    stage_name,
                    {"model": model, "sample": result_settings("sample", dataclasses.asdict(recipe.sample)),
                     "variant": variant},
                    inputs,
                    [out],
                    tasks=[Task("sample", {"model": model, "sample": dataclasses.asdict(recipe.sample),
                                           "out": str(out), "progress": True}, name=f"{recipe.name}-{stage_name}")],
                    distributed=True,
                    **estimate,
                    cleanup=[out, out.with_name(out.name + ".shards")],
                    note=f"{variant}: {recipe.sample.num} images, {recipe.sample.sampler} {recipe.sample.steps}",
                )
            )  # fmt: skip

    # evaluation
    eval_outputs: dict[str, Path] = {}
    if recipe.eval is not None and sample_outputs:
        reference = recipe.eval.reference or ""
        tasks = []
        for variant, samples in sample_outputs.items():
            eval_outputs[variant] = run_dir / "eval" / f"{variant}.json"
            tasks.append(Task("eval", {"samples": str(samples), "reference": reference,
                                       "metrics": list(recipe.eval.metrics), "out": str(eval_outputs[variant]),
                                       "inception_weights": recipe.eval.inception_weights,
                                       "evaluator": recipe.eval.evaluator, "antialias": recipe.eval.antialias,
                                       "resize": recipe.eval.resize, "dinov2_weights": recipe.eval.dinov2_weights},
                              name=f"{recipe.name}-eval-{variant}"))  # fmt: skip
        stages.append(
            Stage(
                "eval",
                {"eval": dataclasses.asdict(recipe.eval)},
                {f"samples-{v}": p for v, p in sample_outputs.items()},
                list(eval_outputs.values()),
                tasks=tasks,
                note=", ".join(recipe.eval.metrics) + f" vs {reference}",
            )
        )

    # table
    if eval_outputs:
        results_dir = records_dir(run_dir)
        outputs = [results_dir / f"{recipe.name}-{v}.json" for v in eval_outputs] + [run_dir / "table.json"]
        stages.append(
            Stage(
                "table",
                {"recipe": recipe.name, "variants": sorted(eval_outputs)},
                {f"eval-{v}": p for v, p in eval_outputs.items()},
                outputs,
                local=lambda: write_results(recipe, run_dir, eval_outputs),
                note="result records + table.json",
            )
        )
    return stages


def write_results(recipe: Recipe, run_dir: Path, eval_outputs: dict[str, Path]) -> dict[str, Any]:
    """Result records (``results/<recipe>-<variant>.json``, each with its protocol) and the run's ``table.json``.

    A post-trained variant's record also carries ``fid_gain`` = baseline FID - its FID, the quantity of the
    MixFlow steps study, when the baseline was evaluated in the same run (hence with the same protocol); the
    post-trained (MixFlow) model's record carries ``fid_gain_vs_<control>`` = the control's FID - its FID for each
    control of the run (``fm-control``: the base model's time law; ``fm-beta``: the post-training's time law).
    """
    import json

    from mixflow_bench.results.protocol import protocol_of
    from mixflow_bench.results.records import make_record, save_record, write_json_atomic

    protocol = (
        protocol_of(
            recipe.sample,
            recipe.eval.metrics if recipe.eval else None,
            recipe.model.name,
            dataclasses.asdict(recipe.eval) if recipe.eval else None,
        )
        if recipe.sample
        else None
    )
    metrics_of = {}
    for variant, path in eval_outputs.items():
        data = json.loads(Path(path).read_text())
        values = data["metrics"] if isinstance(data.get("metrics"), dict) else data
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics_of[variant] = numbers
    base_fid = metrics_of.get("baseline", {}).get("fid")
    rows = {}
    for variant, metrics in metrics_of.items():
        if variant != "baseline" and base_fid is not None and metrics.get("fid") is not None:
            metrics = {**metrics, "fid_gain": float(base_fid) - float(metrics["fid"])}
        if variant not in ("baseline", *CONTROLS) and metrics.get("fid") is not None:
            for control in CONTROLS:
                control_fid = metrics_of.get(control, {}).get("fid")
                if control_fid is not None:
                    metrics = {**metrics, gain_key(control): float(control_fid) - float(metrics["fid"])}
        method, kind = method_and_variant(recipe, variant)
        record = make_record(
            "reproduce",
            metrics,
            name=f"{recipe.name}-{variant}",
            num_samples=recipe.sample.num if recipe.sample else None,
            experiment=recipe.name,
            method=method,
            variant=kind,
            guidance=protocol["guidance"] if protocol else None,
            recipe=recipe.to_dict(),
            protocol=protocol,
            samples=str(run_dir / "samples" / f"{variant}.npz"),
        )
        save_record(record, records_dir(run_dir))
        rows[variant] = metrics
    table = {"recipe": recipe.name, "protocol": protocol, "rows": rows}
    write_json_atomic(run_dir / "table.json", table)
    return table


def gain_key(control: str) -> str:
    """The record metric of a post-trained model's FID gain over ``control`` (its FID - the model's)."""
    return f"fid_gain_vs_{control}"


def remove_stale(stage: Stage) -> None:
    for p in stage.cleanup:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
