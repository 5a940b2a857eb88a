"""The stages of ``mixflow-bench reproduce``: download -> train -> sample (baseline, post-trained) -> eval -> table.

A :class:`Stage` names its settings, input files and output files; the :class:`ManifestStore` decides from them
whether it is done. Work runs through a launcher as :class:`~mixflow_bench.launch.tasks.Task` s (sampling on
torchrun or Slurm, training too for latent models); download and table run in this process.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow_bench.launch.tasks import Task
from mixflow_bench.pipeline.estimate import gpu_hours_sampling, gpu_hours_training
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.sampling.models import TOY_MODELS

STAGE_ORDER = ("download", "train", "sample-baseline", "sample-posttrained", "eval", "table")


@dataclass
class Stage:
    name: str
    settings: dict[str, Any]
    inputs: dict[str, Path | None]
    outputs: list[Path]
    tasks: list[Task] = field(default_factory=list)  # run through the launcher
    local: Callable[[], Any] | None = None  # run in this process instead
    distributed: bool = False  # may run on several processes (torchrun)
    gpu_hours: float | None = None
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
    old_train.pop("steps"), new_train.pop("steps")
    return {**old, "train": old_train} == {**new, "train": new_train}


def is_toy(recipe: Recipe) -> bool:
    return recipe.model.name in TOY_MODELS


def posttrained_name(recipe: Recipe) -> str:
    return "mixflow" if recipe.train and recipe.train.objective.kind == "mixflow" else "fm"


def variants(recipe: Recipe, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Model sections to sample: ``baseline`` (the recipe's checkpoint) and the post-trained model."""
    out: dict[str, dict[str, Any]] = {}
    model = dataclasses.asdict(recipe.model)
    if recipe.train is None or recipe.train.init == "checkpoint":
        out["baseline"] = model
    if recipe.train is not None:
        out[posttrained_name(recipe)] = {**model, "checkpoint": str(run_dir / "train" / "model.pt")}
    return out


def build_stages(recipe: Recipe, run_dir: Path, recipe_ref: str, overrides: dict[str, Any]) -> list[Stage]:
    run_dir = Path(run_dir)
    stages: list[Stage] = []
    toy = is_toy(recipe)

    # download
    artifacts: list[str] = []
    if not toy:
        from mixflow_bench.hub import artifacts_for_recipe

        artifacts = list(artifacts_for_recipe(recipe.to_dict()))

    def download() -> None:
        if artifacts:
            from mixflow_bench.hub import fetch

            for name in artifacts:
                fetch(name)

    note = f"{len(artifacts)} artifacts"
    stages.append(Stage("download", {"artifacts": artifacts}, {}, [], local=download, note=note))

    # train
    if recipe.train is not None:
        train_out = run_dir / "train" / "model.pt"
        init = recipe.model.checkpoint if recipe.train.init == "checkpoint" else None
        inputs = {"init": Path(init)} if init and Path(init).exists() else {}
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
                gpu_hours=gpu_hours_training(recipe.model.name, recipe.train),
                cleanup=[run_dir / "train"],
                note=f"{recipe.train.steps} steps x batch {recipe.train.batch_size}",
                extendable=training_extends,
            )
        )  # fmt: skip

    # sampling
    sample_outputs: dict[str, Path] = {}
    if recipe.sample is not None:
        for variant, model in variants(recipe, run_dir).items():
            out = run_dir / "samples" / f"{variant}.npz"
            sample_outputs[variant] = out
            ckpt = model.get("checkpoint")
            inputs = {"checkpoint": Path(ckpt)} if ckpt and (variant != "baseline" or Path(ckpt).exists()) else {}
            stage_name = "sample-baseline" if variant == "baseline" else "sample-posttrained"
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
                    gpu_hours=gpu_hours_sampling(recipe.model.name, recipe.sample),
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
                                       "inception_weights": recipe.eval.inception_weights},
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
        results_dir = run_dir / "results"
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
    """Result records (``results/<recipe>-<variant>.json``) and the run's ``table.json``."""
    import json

    from mixflow_bench.results.records import make_record, save_record, write_json_atomic

    rows = {}
    for variant, path in eval_outputs.items():
        metrics = json.loads(Path(path).read_text())
        record = make_record(
            "reproduce",
            metrics,
            name=f"{recipe.name}-{variant}",
            num_samples=recipe.sample.num if recipe.sample else None,
            experiment=recipe.name,
            method=variant,
            guidance=recipe.sample.guidance.kind if recipe.sample else None,
            recipe=recipe.to_dict(),
            samples=str(run_dir / "samples" / f"{variant}.npz"),
        )
        save_record(record, run_dir / "results")
        rows[variant] = metrics
    table = {"recipe": recipe.name, "rows": rows}
    write_json_atomic(run_dir / "table.json", table)
    return table


def remove_stale(stage: Stage) -> None:
    for p in stage.cleanup:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
