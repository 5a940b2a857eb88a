"""The work behind the pipeline's stages, as plain functions of JSON arguments (run by any launcher).

Every task resumes: sampling from its shards, training from its last checkpoint, evaluation by rewriting one
small JSON file.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import torch

from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.recipes.schema import GuidanceSection, Recipe, SampleSection
from mixflow_bench.recipes.validate import build_dataclass
from mixflow_bench.results.records import write_json_atomic


def sample_section(sample: dict[str, Any]) -> SampleSection:
    return build_dataclass(SampleSection, copy.deepcopy(sample), "sample")


def sample_task(
    model: dict[str, Any],
    sample: dict[str, Any],
    out: str,
    random_init: bool = False,
    progress: bool = True,
) -> str | None:
    """Sample ``sample["num"]`` images of ``model`` (name, checkpoint, overrides) into the ADM npz ``out``."""
    from mixflow_bench.sampling import sample_to_npz
    from mixflow_bench.sampling.models import default_device, load_codec, resolve_model
    from mixflow_bench.sampling.velocity import model_generator

    cfg = sample_section(sample)
    spec, net = resolve_model(
        model["name"], model.get("checkpoint"), random_init=random_init, overrides=model.get("overrides")
    )
    guide = None
    if cfg.guidance.kind == "autoguidance":
        _, guide = resolve_model(cfg.guidance.guide_model, cfg.guidance.guide_checkpoint, random_init=random_init)
    device = default_device()
    codec = load_codec(spec, random_init=random_init)
    if codec is not None and hasattr(codec, "to"):
        codec = codec.to(device)
    generator = model_generator(
        spec,
        net,
        cfg,
        codec=codec,
        guide_model=guide,
        device=device,
        fingerprint_extra={"checkpoint": _file_identity(model.get("checkpoint")), "random_init": random_init},
    )
    result = sample_to_npz(
        generator,
        cfg.num,
        Path(out),
        seed=cfg.seed,
        labels=cfg.labels,
        batch_size=cfg.batch_size,
        shard_size=cfg.shard_size,
        progress=progress,
    )
    return str(result) if result else None


def _file_identity(path: str | None) -> str | None:
    """A checkpoint's identity for shard fingerprints: name, size and mtime (cheap; the manifest hashes it)."""
    if path is None or not Path(path).exists():
        return path
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"


def sleep_task(seconds: float = 1.0, marker: str | None = None) -> float:
    """Sleep (for launcher tests); writes ``marker`` with the job id when given."""
    time.sleep(seconds)
    if marker:
        Path(marker).write_text(os.environ.get("SLURM_JOB_ID", "local"))
    return seconds


# --- training ------------------------------------------------------------------------------------------------
def build_objective(recipe: Recipe, spec: Any):
    """The training objective of the recipe's method (``train.objective.kind``, :mod:`mixflow_bench.methods`) on the
    model's path and convention."""
    from mixflow_bench.methods import get_method

    o = recipe.train.objective
    return get_method(o.kind).build_objective(o, spec)


def toy_training_data(recipe: Recipe):
    """The train split of the recipe's toy data set."""
    from mixflow_bench.data.toy import load_digits_split, load_toy2d_split

    d = recipe.data
    if d is None or d.source not in ("digits", "toy2d"):
        raise ValueError(f"recipe {recipe.name}: toy training needs data.source digits or toy2d")
    if d.source == "digits":
        train, _ = load_digits_split(seed=d.seed)
    else:
        train, _, _ = load_toy2d_split(seed=d.seed)
    return train


def train_task(recipe: str, overrides: dict[str, Any] | None, out_dir: str, init_checkpoint: str | None = None) -> str:
    """Train (or post-train) the recipe's model; writes the EMA weights to ``out_dir/model.pt``."""
    from mixflow_bench.sampling.models import resolve_model

    r = load_recipe(recipe, overrides)
    if r.train is None:
        raise ValueError(f"recipe {r.name} has no train: section")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = init_checkpoint or (r.model.checkpoint if r.train.init == "checkpoint" else None)
    # Seed before the model is built: a from-scratch model's initial weights come from this RNG.
    torch.manual_seed(r.train.seed)
    spec, model = resolve_model(r.model.name, checkpoint, overrides=r.model.overrides)
    objective = build_objective(r, spec)
    return str(_train_with_engine(r, model, objective, out, out / "model.pt", num_classes=spec.num_classes))


def _training_batches(r: Recipe, rank: int, world: int, num_classes: int | None = None):
    """In-memory batches of a toy data set, or model-space batches of a latent cache that fits the recipe."""
    if r.data is not None and r.data.source in ("digits", "toy2d"):
        from mixflow_bench.train.batches import InMemoryBatches

        data = toy_training_data(r)
        return InMemoryBatches(data.x, data.y, r.train.batch_size, r.train.seed, rank, world)
    from mixflow_bench.data import LatentBatches, LatentDataset
    from mixflow_bench.data.compatibility import check_cache_fits_recipe

    dataset = LatentDataset(r.data.path)
    check_cache_fits_recipe(dataset, r, num_classes, _encoder_fingerprint(r, dataset))
    return LatentBatches(dataset, r.train.batch_size, r.train.seed, rank, world, hflip=r.data.hflip)


def _encoder_fingerprint(r: Recipe, dataset: Any) -> str | None:
    """The fingerprint of the encoder weights the recipe resolves now, when the cache recorded one to compare."""
    from mixflow_bench.data.codec import ENCODER_NAMES, build_named_codec
    from mixflow_bench.data.compatibility import encoder_weights_fingerprint

    recorded = (dataset.manifest.get("encoder_weights") or {}).get("sha256")
    if not recorded or r.data.encoder not in ENCODER_NAMES:
        return None
    return encoder_weights_fingerprint(build_named_codec(r.data.encoder, dataset.resolution))


def check_first_batch(r: Recipe, batches: Any, out: Path) -> str | None:
    """The latent invariant: std of the first global batch in the model's space against the encoder's range.

    Logged to stdout and ``out/latent_check.json``; an out-of-range std stops training (``train.latent_check``).
    """
    from mixflow_bench.models.latents import check_latent_std

    if r.data is None or r.data.source != "latent-cache" or r.train.latent_check == "off":
        return None
    x, _ = batches._build(batches.sampler.epoch, batches.sampler.step)
    std = float(x.float().std())
    encoder = batches.dataset.encoder
    line = check_latent_std(encoder, std, r.train.latent_check)
    print(line, flush=True)
    if int(os.environ.get("RANK", 0)) == 0:
        write_json_atomic(out / "latent_check.json", {"encoder": encoder, "batch_std": std, "report": line})
    return line


def _train_with_engine(r: Recipe, model, objective, out: Path, final: Path, num_classes: int | None = None) -> Path:
    """(Post-)training through ``mixflow_bench.train`` (multi-GPU, bf16, resumable); EMA weights to ``final``."""
    from mixflow_bench.train.checkpoint import export_ema
    from mixflow_bench.train.engine import TrainConfig, train

    t = r.train
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    batches = _training_batches(r, rank, world, num_classes)
    check_first_batch(r, batches, out)
    config = TrainConfig(
        steps=t.steps, global_batch_size=t.batch_size, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
        ema_decay=t.ema_decay, grad_clip=t.grad_clip, precision=t.precision, lr_schedule=t.lr_schedule,
        warmup_steps=t.warmup_steps, final_lr=t.final_lr, checkpoint_every=t.checkpoint_every, seed=t.seed,
        compile=t.compile, log_every=min(100, t.checkpoint_every),
    )  # fmt: skip
    result = train(model, objective, batches, config, out, resume=True)
    if rank == 0:
        export_ema(result.last_checkpoint, final)
    return final


# --- evaluation ----------------------------------------------------------------------------------------------
def eval_task(
    samples: str,
    reference: str,
    metrics: list[str],
    out: str,
    inception_weights: str | None = None,
    evaluator: str = "adm",
    antialias: bool = True,
    resize: str = "tf1",
    dinov2_weights: str | None = None,
) -> dict[str, float]:
    """Evaluate the ADM npz ``samples`` against ``reference`` with any registered metrics
    (:func:`mixflow_bench.metrics.registry.evaluate`); writes ``{metric: value}`` to ``out``.

    The evaluator's own record (sample count, reference, network weights, settings, notes) is written beside it
    as ``<out stem>.details.json``, so every number keeps its protocol.
    """
    from mixflow_bench.data.toy import resolve_toy_reference
    from mixflow_bench.metrics.registry import evaluate

    result = evaluate(samples, resolve_toy_reference(reference), metrics, evaluator,
                      inception_weights=inception_weights, antialias=antialias, resize=resize,
                      dinov2_weights=dinov2_weights, show_progress=False)  # fmt: skip
    values = {k: float(v) for k, v in result.metrics.items()}
    details: dict[str, Any] = {
        "num_samples": result.num_samples,
        "num_reference_images": result.num_reference_images,
        "reference_stats": result.reference_stats,
        "settings": result.settings,
        "notes": result.notes,
        "timings": result.timings,
    }
    if int(os.environ.get("RANK", 0)) == 0:
        write_json_atomic(Path(out).with_suffix(".details.json"), details)
        write_json_atomic(Path(out), values)
    return values


__all__ = ["GuidanceSection", "eval_task", "sample_task", "sleep_task", "train_task"]
