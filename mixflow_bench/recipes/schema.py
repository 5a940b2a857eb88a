"""The fields of a recipe: one dataclass per section, with the defaults of plain flow matching.

Times in a recipe (guidance interval, time shift) are in the model's own convention, which the model's zoo entry
declares; the recipe comments say which one it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from mixflow_bench.methods import get_method, method_names
from mixflow_bench.samplers import sampler_names


@dataclass
class ModelSection:
    name: str  # a zoo name (``mixflow-bench`` models) or a toy model (``toy-mlp``)
    checkpoint: str | None = None  # artifact name, file path, or null (random init / trained by this recipe)
    overrides: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the model builder


@dataclass
class DataSection:
    source: Literal["toy2d", "digits", "checkerboard", "shapes", "latent-cache", "image-folder"]
    path: str | None = None  # cache or image folder
    encoder: str | None = None  # codec name for latent caches: sd-vae-ft-ema | sd-vae-ft-mse | rae-dinov2-b
    resolution: int | None = None
    num_train: int | None = None
    num_heldout: int | None = None
    seed: int = 0
    hflip: bool = True  # random horizontal flips in training (SiT, RAE); REPA's own training has none


    def check(self) -> tuple[str, str] | None:
        if self.source in ("latent-cache", "image-folder") and not self.path:
            return "path", f"required when source is {self.source!r}"
        return None


@dataclass
class ObjectiveSection:
    kind: str = "fm"  # a registered method (mixflow_bench.methods): fm | mixflow | gmflow | mixed-source | ...
    path: Literal["linear", "gvp"] = "linear"
    t_dist: Literal["uniform", "beta21", "logit-normal"] = "uniform"  # of data-ward time (1 = data)
    mixture: Literal["slowed", "uniform", "zero-to-t"] = "slowed"  # MixFlow's slowed-time distribution
    gamma: float = 0.8  # mixture range coefficient: m ~ U[(1-gamma) t, t] in data-ward time
    target: Literal["slowed", "original"] = "slowed"  # u*(x_m, m) or u*(x_t, t); equal on the linear path
    time_shift: float | Literal["auto"] | None = None  # RAE's noise-level shift; "auto" = sqrt(C*H*W/4096)
    label_dropout: float = 0.0  # probability of the null label (classifier-free guidance training)
    params: dict[str, Any] = field(default_factory=dict)  # the method's own settings (GMFlow's trans_ratio, ...)

    def check(self) -> tuple[str, str] | None:
        if self.kind not in method_names():
            return "kind", f"expected one of {', '.join(map(repr, method_names()))}, got {self.kind!r}"
        if not 0.0 <= self.gamma <= 1.0:
            return "gamma", f"must lie in [0, 1], got {self.gamma}"
        if not 0.0 <= self.label_dropout < 1.0:
            return "label_dropout", f"must lie in [0, 1), got {self.label_dropout}"
        if isinstance(self.time_shift, float) and self.time_shift <= 0:
            return "time_shift", f"must be positive, got {self.time_shift}"
        return None


@dataclass
class TrainSection:
    steps: int
    batch_size: int
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    init: Literal["checkpoint", "scratch"] = "checkpoint"  # post-train from model.checkpoint, or from scratch
    lr: float = 1e-4
    final_lr: float | None = None
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the training model (RAE's recipes: true, as its official train.py)
    checkpoint_every: int = 1000
    seed: int = 0
    # latent caches: std of the first batch in the model's space against the encoder's expected range
    latent_check: Literal["error", "warn", "off"] = "error"

    def check(self) -> tuple[str, str] | None:
        if self.steps <= 0:
            return "steps", f"must be positive, got {self.steps}"
        if self.batch_size <= 0:
            return "batch_size", f"must be positive, got {self.batch_size}"
        if not 0.0 <= self.ema_decay < 1.0:
            return "ema_decay", f"must lie in [0, 1), got {self.ema_decay}"
        return None


@dataclass
class GuidanceSection:
    kind: Literal["none", "cfg", "autoguidance", "probabilistic"] = "none"  # probabilistic: GMFlow, scale in [0, 1)
    scale: float = 1.0
    channels: int | None = None  # guide only the first k channels (SiT's 3-of-4); null = all
    interval: tuple[float, float] | None = None  # [lo, hi] in the model's own time; guided where lo <= t <= hi
    guide_model: str | None = None  # zoo name of the autoguidance model
    guide_checkpoint: str | None = None
    orthogonal: float = 1.0  # probabilistic guidance: share of the bias's projection on the mean removed

    def check(self) -> tuple[str, str] | None:
        if self.kind == "probabilistic" and not 0.0 <= self.scale < 1.0:
            return "scale", f"probabilistic guidance needs a scale in [0, 1), got {self.scale}"
        if self.kind == "autoguidance" and not self.guide_model:
            return "guide_model", "required for autoguidance"
        if self.interval is not None and self.interval[0] > self.interval[1]:
            return "interval", f"lower bound above upper bound: {list(self.interval)}"
        return None


@dataclass
class SampleSection:
    sampler: str  # a registered sampler (mixflow_bench.samplers)
    steps: int
    num: int = 50_000
    guidance: GuidanceSection = field(default_factory=GuidanceSection)
    labels: Literal["uniform", "equal"] = "uniform"
    seed: int = 0
    batch_size: int = 64
    shard_size: int = 1000
    # fp8: bf16 autocast with FP8 linears (mixflow_bench.models.float8), opt-in, CUDA capability >= 8.9 only
    precision: Literal["fp32", "tf32", "bf16", "fp8"] = "fp32"
    time_shift: float | Literal["auto"] | None = None  # RAE grid shift; "auto" = sqrt(C*H*W/4096)
    last_step_size: float = 0.04  # SDE: the final drift-only step
    quantize: Literal["round", "truncate"] = "round"  # SiT rounds (127.5x+128); REPA/RAE truncate
    # Fast-path switches (see mixflow_bench.sampling.fast); the defaults are the exact reference path.
    attention: Literal["sdpa", "math"] = "sdpa"  # fused attention, or the explicit softmax of the official code
    compile: bool = False  # torch.compile the model (and guide)
    cuda_graphs: bool = False  # with compile: capture CUDA graphs of each model call (mode reduce-overhead)
    substeps: int | None = None  # GM-ODE sub-steps per network step; null = max(ceil(128 / steps), 2)

    def check(self) -> tuple[str, str] | None:
        if self.sampler not in sampler_names():
            return "sampler", f"expected one of {', '.join(map(repr, sampler_names()))}, got {self.sampler!r}"
        if self.substeps is not None and self.substeps <= 0:
            return "substeps", f"must be positive, got {self.substeps}"
        if self.steps <= 0:
            return "steps", f"must be positive, got {self.steps}"
        if self.num <= 0:
            return "num", f"must be positive, got {self.num}"
        if self.cuda_graphs and not self.compile:
            return "cuda_graphs", "needs compile: true (the graphs are captured by torch.compile)"
        return None


@dataclass
class ReferenceDataSection:
    """Where ``eval.reference`` (an npz path) comes from: a data set's training images, built by
    ``mixflow-bench data prepare --reference`` (:mod:`mixflow_bench.data.reference_images`)."""

    dataset: Literal["cifar10", "image-folder"]
    resolution: int
    archive: str | None = None  # cifar10: the artifact (cifar10-python) or a path to cifar-10-python.tar.gz
    split: Literal["train"] = "train"
    # the first `limit` images of the listing (FFHQ / AFHQv2: 10000, the official FID-10K reference); None: all
    limit: int | None = None

    def check(self) -> tuple[str, str] | None:
        if self.resolution <= 0:
            return "resolution", f"must be positive, got {self.resolution}"
        if self.limit is not None and self.limit <= 0:
            return "limit", f"must be a positive number of images or null (every image), got {self.limit}"
        if self.dataset == "cifar10" and not self.archive:
            return "archive", "cifar10 needs the archive (artifact cifar10-python or a path)"
        if self.dataset == "cifar10" and self.resolution != 32:
            return "resolution", f"CIFAR-10 images are 32x32, got {self.resolution}"
        return None


@dataclass
class EvalSection:
    reference: str | None = None  # artifact name (adm-ref-imagenet256), .npz path, folder of images or data-set name
    # an evaluator of mixflow_bench.metrics.registry: adm (the ADM-exact evaluator) or torchmetrics
    # (FrechetInceptionDistance(normalize=True) as the κ-FC paper runs it; FID only)
    evaluator: str = "adm"
    # torchmetrics only: its resize to 299 (True: torch bilinear with antialias, the default since torchmetrics
    # 1.8; False: torch-fidelity's TF1-style bilinear, torchmetrics before 1.8)
    antialias: bool = True
    # adm only: tf1 (ADM's TF1 bilinear) or clean (clean-fid's PIL bicubic: its own protocol)
    resize: Literal["tf1", "clean"] = "tf1"
    reference_data: ReferenceDataSection | None = None
    # names from mixflow_bench.metrics.registry (fid, sfid, is, prec, rec, kid, fd-dinov2, fd-data, ...)
    metrics: list[str] = field(default_factory=lambda: ["fid", "sfid", "is", "prec", "rec"])
    # the Inception network's weights: a file, an artifact name, or null for the evaluator's default
    inception_weights: str | None = None
    # fd-dinov2: a local Hugging Face folder or an artifact name; null: dinov2-vit-l
    dinov2_weights: str | None = None

    def check(self) -> tuple[str, str] | None:
        from mixflow_bench.metrics.registry import check_metrics, resolve_evaluator

        try:
            resolve_evaluator(self.evaluator)
        except ValueError as exc:
            return "evaluator", str(exc)
        try:
            check_metrics(self.metrics, self.evaluator)
        except ValueError as exc:
            return "metrics", str(exc)
        return None


@dataclass
class SlurmSection:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int | None = None
    timeout_min: int = 240
    constraint: str | None = None


@dataclass
class StudySection:
    """The small reproduction: baseline, FM-control and MixFlow post-training compared over seeds and steps."""

    baseline_steps: int
    posttrain_steps: int
    batch_size: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    eval_steps: list[int] = field(default_factory=lambda: [4, 8, 16, 50])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    num_eval_samples: int = 2000
    gamma: float = 0.8
    gammas: list[float] | None = None  # a MixFlow gamma sweep in one run (default: [gamma])
    slow_flow_samples: int = 500
    slow_flow_steps: int = 16
    # kind "gmflow": GMFlow's checkerboard (baseline_steps = steps of every model; posttrain_steps unused)
    kind: Literal["mixflow", "gmflow"] = "mixflow"
    components: list[int] = field(default_factory=lambda: [1, 8, 64])  # K of each GMFlow model
    solvers: list[str] = field(default_factory=lambda: list(sampler_names("gm")))  # GMFlow's registered samplers
    trans_ratio: float = 0.9  # GMFlow's transition-loss ratio lambda (1 = the plain GM NLL)

    def check(self) -> tuple[str, str] | None:
        if any(s <= 0 for s in self.eval_steps):
            return "eval_steps", f"every NFE must be positive, got {self.eval_steps}"
        if any(k <= 0 for k in self.components):
            return "components", f"every K must be positive, got {self.components}"
        unknown = [s for s in self.solvers if s not in sampler_names("gm")]
        if unknown:
            return "solvers", f"expected GM samplers ({', '.join(sampler_names('gm'))}), got {unknown[0]!r}"
        if not 0.0 < self.trans_ratio <= 1.0:
            return "trans_ratio", f"must lie in (0, 1], got {self.trans_ratio}"
        return None


@dataclass
class RegimeStudySection:
    """The regime study (:mod:`mixflow_bench.experiments.regime`): MixFlow against both controls over MLP widths x
    training lengths x gamma x NFE, seeds paired. ``base_steps[i]`` and ``posttrain_steps[i]`` form length i."""

    widths: list[int]
    base_steps: list[int]
    posttrain_steps: list[int]
    depth: int = 3
    gammas: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.8])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval_steps: list[int] = field(default_factory=lambda: [4, 8, 16])
    batch_size: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.995
    grad_clip: float | None = 1.0
    num_eval_samples: int = 1000
    slow_flow_samples: int = 200
    slow_flow_steps: int = 8

    def check(self) -> tuple[str, str] | None:
        if len(self.base_steps) != len(self.posttrain_steps):
            n, got = len(self.base_steps), len(self.posttrain_steps)
            return "posttrain_steps", f"one per base_steps entry ({n}), got {got}"
        if any(n <= 0 for n in [*self.widths, *self.base_steps, *self.posttrain_steps, *self.eval_steps]):
            return "widths", "widths, step counts and NFE must be positive"
        if not all(0.0 < g <= 1.0 for g in self.gammas):
            return "gammas", f"every gamma must lie in (0, 1], got {self.gammas}"
        if len(self.seeds) < 2:
            return "seeds", "the seed spread needs at least 2 seeds"
        return None


@dataclass
class MixedSourceStudySection:
    """The κ-FC mixed-source reproduction: rectified flow, Fast-ODE and mixed source at one training budget."""

    steps: int  # optimizer steps of every method (equal budget)
    methods: list[str] = field(
        default_factory=lambda: ["rectified-flow", "fast-ode", "mixed-source", "mixed-source-rv"]
    )
    betas: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # KL weight sweep (KL summed per sample)
    betas_by_method: dict[str, list[float]] = field(default_factory=dict)  # a method's own betas (default: betas)
    kappa: Literal["image", "class", "noise"] = "image"
    source_hidden: int = 128
    source_depth: int = 2
    batch_size: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.995
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    eval_nfe: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 128])  # Euler steps
    num_eval_samples: int = 2000
    curvature_samples: int = 1000
    curvature_steps: int = 128

    def check(self) -> tuple[str, str] | None:
        from mixflow_bench.flow.mixed_source import METHODS

        if self.steps <= 0:
            return "steps", f"must be positive, got {self.steps}"
        for b in self.betas + [b for bs in self.betas_by_method.values() for b in bs]:
            if not b >= 0:
                return "betas", f"the KL weight beta must be >= 0, got {b}"
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            return "methods", f"unknown method {unknown[0]!r} (expected one of: {', '.join(METHODS)})"
        return None


@dataclass
class Recipe:
    name: str
    model: ModelSection
    description: str = ""
    data: DataSection | None = None
    train: TrainSection | None = None
    sample: SampleSection | None = None
    eval: EvalSection | None = None
    slurm: SlurmSection = field(default_factory=SlurmSection)
    study: StudySection | None = None
    # The equal-length flow-matching control: post-trained from the same checkpoint with the same steps, optimiser,
    # batch, data and seed as ``train``, with only the objective replaced by this one; sampled and evaluated beside
    # the post-trained model as the ``fm-control`` variant (null: no control).
    control: ObjectiveSection | None = None
    # The time-law control, sampled as the ``fm-beta`` variant: as ``control`` (same length, checkpoint, optimiser,
    # batch and seed), flow matching with the post-training's own time law and no slowing (MixFlow: Beta(2,1)
    # times, gamma = 0), so a MixFlow gain over it is the slowing's alone (null: none).
    time_law_control: ObjectiveSection | None = None
    mixed_source: MixedSourceStudySection | None = None  # the κ-FC mixed-source reproduction
    regime: RegimeStudySection | None = None  # where MixFlow helps on digits (mixflow_bench.experiments.regime)
    image_study: dict[str, Any] | None = None  # the GPU shapes study's settings (ShapesStudyConfig fields)
    reported: list[str] = field(default_factory=list)  # keys of rows in results/reported.yaml
    notes: list[str] = field(default_factory=list)  # settings the sources leave unknown, and other caveats
    source: str = ""  # the file it was loaded from (filled by the loader)

    def check(self) -> tuple[str, str] | None:
        law = self.time_law_control
        if law is not None and self.train is not None:
            trained = self.train.objective
            if law.kind != "fm":
                return "time_law_control", f"is flow matching without slowing (kind: fm), got kind {law.kind!r}"
            if (law.t_dist, law.time_shift) != (trained.t_dist, trained.time_shift):
                return "time_law_control", (
                    f"draws times as the post-training does (t_dist {trained.t_dist}, time_shift "
                    f"{trained.time_shift}), got t_dist {law.t_dist}, time_shift {law.time_shift}"
                )
        if self.train is not None and self.sample is not None:
            method = get_method(self.train.objective.kind)
            if self.sample.sampler not in method.samplers():
                return "sample.sampler", (
                    f"a {method.name} model ({method.output} output) is sampled by {', '.join(method.samplers())}; "
                    f"got {self.sample.sampler!r}"
                )
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
