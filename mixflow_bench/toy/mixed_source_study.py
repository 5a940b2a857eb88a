"""The small κ-FC mixed-source reproduction: rectified flow vs Fast-ODE vs mixed source on CPU-sized data.

For each seed, every method is trained from scratch for the same number of steps at the same batch size: rectified
flow (w = 0, no source network), Fast-ODE (w = 1), mixed source (w ~ U(0, 1)) and its random-variable variant,
the last three at every KL weight beta of a sweep. Every EMA model then samples from the *same* N(0, I) noise with
Euler at each NFE of the recipe; quality is the data-space Fréchet distance and the energy distance to held-out
data (and the exact NLL on the 2-D toy); curvature is the paper's (Euler, 128 steps). Times are DATA_AT_1.

The claims tested: lower curvature than rectified flow; better few-step quality than both rectified flow and
Fast-ODE; equal or better quality at high NFE; a too-small beta hurting at high NFE.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from mixflow_bench.analysis.curvature import plot_curvature, summarize, trajectory_curvature
from mixflow_bench.atomic import atomic_path, atomic_write_text
from mixflow_bench.flow.counted_solvers import euler
from mixflow_bench.flow.mixed_source import (
    CONVENTION,
    METHOD_LABELS,
    MixedSourceModel,
    mixed_source_method,
)
from mixflow_bench.metrics.toy import data_fd, finite_or_raise, mean_nll
from mixflow_bench.models.source_network import SourceMLP
from mixflow_bench.models.toy_mlp import ToyVelocityMLP
from mixflow_bench.progress import step_progress
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.results.records import make_record, save_record, write_json_atomic
from mixflow_bench.runs import records_dir
from mixflow_bench.toy.study import StudyData, load_study_data


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a registered method name at one KL weight."""

    method: str
    beta: float | None  # None for rectified flow (no source, no KL)

    @property
    def key(self) -> str:
        return self.method if self.beta is None else f"{self.method}@beta={self.beta:g}"


def variants_of(recipe: Recipe) -> list[Variant]:
    """The configurations a recipe trains per seed, in table order."""
    section = recipe.mixed_source
    out: list[Variant] = []
    for method in section.methods:
        if method == "rectified-flow":
            out.append(Variant(method, None))
            continue
        betas = section.betas_by_method.get(method, section.betas)
        out += [Variant(method, float(b)) for b in betas]
    return out


def energy_distance(a: Tensor, b: Tensor) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two sample sets (flattened; V-statistics)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def build_model(recipe: Recipe, data: StudyData, variant: Variant, seed: int) -> MixedSourceModel:
    """Velocity MLP (unconditional, as the released velocity network) plus, where used, the source MLP."""
    section = recipe.mixed_source
    torch.manual_seed(seed)
    shape = data.train.data_shape
    velocity = ToyVelocityMLP(shape, 1, convention=CONVENTION, **recipe.model.overrides)
    source = None
    if variant.method != "rectified-flow":
        source = SourceMLP(shape, section.kappa, data.train.num_classes, section.source_hidden, section.source_depth)
    return MixedSourceModel(UnconditionalVelocity(velocity), source)


class UnconditionalVelocity(torch.nn.Module):
    """A toy velocity MLP fed the single class 0: the released velocity network is unconditional."""

    def __init__(self, net: ToyVelocityMLP) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x, t, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))


def _train(model, objective, data: StudyData, recipe: Recipe, seed: int, out_dir: FilePath) -> dict[str, Tensor]:
    from mixflow_bench.toy.engine_training import train_small_model

    section = recipe.mixed_source
    return train_small_model(
        model, objective, data.train.x, data.train.y, steps=section.steps, batch_size=section.batch_size,
        lr=section.lr, ema_decay=section.ema_decay, grad_clip=recipe.train.grad_clip if recipe.train else None,
        seed=seed, out_dir=out_dir, recipe=recipe.to_dict(),
    )  # fmt: skip


def evaluate(model: MixedSourceModel, data: StudyData, nfes: list[int], x0: Tensor, x0_curv: Tensor,
             curvature_steps: int) -> tuple[dict[str, dict], Tensor, Tensor]:
    """Scores at each Euler NFE, per-trajectory curvature, and the curvature trajectories (T + 1, B, ...)."""
    model.eval()
    y0 = torch.zeros(len(x0), dtype=torch.long)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, y0[: len(x)])

    scores: dict[str, dict] = {}
    for nfe in nfes:
        sample = euler(velocity, x0, nfe).sample
        finite_or_raise(sample, f"samples at {nfe} Euler steps")
        s = {"fd": data_fd(sample, data.heldout.x), "energy": energy_distance(sample, data.heldout.x)}
        if data.log_density is not None:
            s["nll"] = mean_nll(sample, data.log_density)
        scores[str(nfe)] = s
    sol = euler(velocity, x0_curv, curvature_steps)
    curv = trajectory_curvature(sol.trajectory)
    return scores, curv, torch.stack(sol.trajectory)


def run_mixed_source_study(
    recipe: Recipe,
    out_dir: FilePath,
    *,
    seeds: list[int] | None = None,
    results_dir: FilePath | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train and evaluate every variant of a ``mixed_source:`` recipe; JSON, table and PNGs under ``out_dir``."""
    if recipe.mixed_source is None:
        raise ValueError(f"{recipe.source}: mixed_source: missing (not a κ-FC mixed-source study recipe)")
    console = console or Console()
    section = recipe.mixed_source
    seeds = seeds if seeds is not None else section.seeds
    data = load_study_data(recipe)
    out_dir = FilePath(out_dir)
    variants = variants_of(recipe)
    shape = data.train.data_shape
    per_seed: dict[str, dict] = {}
    curvatures: dict[str, dict] = {}
    started = time.perf_counter()
    traj_plot: dict[str, Tensor] = {}
    with step_progress() as prog:
        task = prog.add_task(f"{recipe.name}: models trained and evaluated", total=len(seeds) * len(variants),
                             unit="models")  # fmt: skip
        for seed in seeds:
            g = torch.Generator().manual_seed(10_000 + seed)
            x0 = torch.randn((section.num_eval_samples, *shape), generator=g)
            x0_curv = torch.randn((section.curvature_samples, *shape), generator=g)
            per_seed[str(seed)], curvatures[str(seed)] = {}, {}
            for v in variants:
                objective = mixed_source_method(v.method, beta=v.beta or 0.0, kappa=section.kappa)
                model = build_model(recipe, data, v, seed)
                ema = _train(model, objective, data, recipe, seed, out_dir / f"seed{seed}" / v.key)
                model.load_state_dict(ema)
                with torch.no_grad():
                    scores, curv, traj = evaluate(model, data, section.eval_nfe, x0, x0_curv, section.curvature_steps)
                per_seed[str(seed)][v.key] = scores
                curvatures[str(seed)][v.key] = summarize(curv)
                if seed == seeds[0] and len(shape) == 1 and shape[0] == 2:
                    traj_plot[v.key] = traj[:, :48]
                if seed == seeds[0]:
                    curvatures.setdefault("_values", {})[v.key] = curv
                prog.advance(task, 1)
    values = curvatures.pop("_values")
    keys = [v.key for v in variants]
    summary = _summarize(per_seed, curvatures, keys, section.eval_nfe)
    floor = data_fd(data.train.x[: len(data.heldout.x)], data.heldout.x)
    result = {
        "recipe": recipe.name,
        "method_family": "kappa-FC mixed source (Nayal et al., arXiv 2604.09181)",
        "convention": "data_at_1 (t=0 source N(0, I), t=1 data)",
        "protocol": (
            f"Euler from the same N(0, I) noise; {section.num_eval_samples} samples vs {len(data.heldout.x)} held-out "
            f"points; FD = Fréchet distance of Gaussian fits in data space; energy distance; curvature: Euler "
            f"{section.curvature_steps} steps, {section.curvature_samples} trajectories, per-element mean"
        ),
        "training": {"steps": section.steps, "batch_size": section.batch_size, "lr": section.lr,
                     "ema_decay": section.ema_decay, "kappa": section.kappa},
        "variants": keys,
        "seeds": seeds,
        "eval_nfe": section.eval_nfe,
        "per_seed": per_seed,
        "curvature_per_seed": curvatures,
        "summary": summary,
        "data_fd_floor": floor,
        "seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }
    write_json_atomic(out_dir / "study.json", result)
    _plot_quality(summary, keys, section.eval_nfe, out_dir / "quality_vs_nfe.png", recipe.name)
    _plot_beta(summary, variants, section.eval_nfe, out_dir / "beta_sweep.png", recipe.name)
    best_values = {k: values[k] for k in _best_per_method(summary, variants)}
    plot_curvature(best_values, out_dir / "curvature.png", f"{recipe.name}: curvature (seed {seeds[0]})",
                   {k: traj_plot[k] for k in best_values if k in traj_plot} or None)
    atomic_write_text(out_dir / "table.md", markdown_table(result))
    for key in keys:
        metrics = {}
        for nfe in section.eval_nfe:
            for name, v in summary[key]["nfe"][str(nfe)].items():
                metrics[f"{name}@{nfe}"], metrics[f"{name}@{nfe}_std"] = v["mean"], v["std"]
        metrics["curvature"] = summary[key]["curvature"]["mean"]
        metrics["curvature_std"] = summary[key]["curvature"]["std"]
        record = make_record(
            "study", metrics, name=f"study-{recipe.name}-{key}", experiment=recipe.name, method=key, guidance="none",
            seeds=seeds, recipe=recipe.to_dict(),
            note=f"small CPU reproduction of the κ-FC mixed source, {len(seeds)} seeds, Euler; lower is better",
        )
        save_record(record, results_dir or records_dir(out_dir))
    print_study(result, console)
    return result


def _stat(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "values": a.tolist()}


def _summarize(per_seed: dict, curvatures: dict, keys: list[str], nfes: list[int]) -> dict:
    out: dict = {}
    seeds = list(per_seed)
    for key in keys:
        out[key] = {"nfe": {}, "curvature": _stat([curvatures[s][key]["mean_curvature"] for s in seeds])}
        for nfe in nfes:
            names = per_seed[seeds[0]][key][str(nfe)].keys()
            out[key]["nfe"][str(nfe)] = {n: _stat([per_seed[s][key][str(nfe)][n] for s in seeds]) for n in names}
    return out


def _best_per_method(summary: dict, variants: list[Variant]) -> list[str]:
    """Per method, the beta with the lowest mean FD summed over NFEs (for plots only)."""
    best: dict[str, tuple[float, str]] = {}
    for v in variants:
        score = sum(m["fd"]["mean"] for m in summary[v.key]["nfe"].values())
        if v.method not in best or score < best[v.method][0]:
            best[v.method] = (score, v.key)
    return [k for _, k in best.values()]


def markdown_table(result: dict) -> str:
    """FD (mean ± std over seeds) per NFE, energy distance at the fewest and most NFE, and curvature."""
    s, nfes = result["summary"], result["eval_nfe"]
    lo, hi = str(nfes[0]), str(nfes[-1])
    head = ["variant", *[f"FD@{n}" for n in nfes], f"energy@{lo}", f"energy@{hi}", "curvature"]
    lines = [
        f"### {result['recipe']}: κ-FC mixed source vs rectified flow vs Fast-ODE",
        "",
        f"Protocol: {result['protocol']}. Mean ± std over seeds {result['seeds']}; lower is better; "
        f"FD floor (train vs held-out): {result['data_fd_floor']:.4f}. Training: {result['training']}. "
        f"Wall time {result['seconds']:.0f} s on {result['torch_threads']} threads.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" + "---:|" * (len(head) - 1),
    ]
    best = {n: min(s[k]["nfe"][str(n)]["fd"]["mean"] for k in result["variants"]) for n in nfes}
    for key in result["variants"]:
        cells = []
        for n in nfes:
            v = s[key]["nfe"][str(n)]["fd"]
            text = f"{v['mean']:.4f} ± {v['std']:.4f}"
            cells.append(f"**{text}**" if math.isclose(v["mean"], best[n]) else text)
        for n in (lo, hi):
            v = s[key]["nfe"][n]["energy"]
            cells.append(f"{v['mean']:.4f} ± {v['std']:.4f}")
        c = s[key]["curvature"]
        cells.append(f"{c['mean']:.4g} ± {c['std']:.2g}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_study(result: dict, console: Console) -> None:
    s, nfes = result["summary"], result["eval_nfe"]
    table = Table(title=f"{result['recipe']}: FD by Euler NFE and curvature (mean ± std over {len(result['seeds'])} "
                        "seeds; lower is better)")
    table.add_column("variant")
    for n in nfes:
        table.add_column(f"FD@{n}", justify="right")
    table.add_column("curvature", justify="right")
    best = {n: min(s[k]["nfe"][str(n)]["fd"]["mean"] for k in result["variants"]) for n in nfes}
    for key in result["variants"]:
        cells = []
        for n in nfes:
            v = s[key]["nfe"][str(n)]["fd"]
            text = f"{v['mean']:.3f}±{v['std']:.3f}"
            cells.append(f"[bold]{text}[/bold]" if math.isclose(v["mean"], best[n]) else text)
        c = s[key]["curvature"]
        table.add_row(key, *cells, f"{c['mean']:.3g}±{c['std']:.2g}")
    console.print(table)
    console.print(f"FD floor (train vs held-out): {result['data_fd_floor']:.4f}; {result['seconds']:.0f} s")


def _plot_quality(summary: dict, keys: list[str], nfes: list[int], path: FilePath, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(summary[keys[0]]["nfe"][str(nfes[0])])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key in keys:
            mean = np.array([summary[key]["nfe"][str(n)][metric]["mean"] for n in nfes])
            std = np.array([summary[key]["nfe"][str(n)][metric]["std"] for n in nfes])
            ax.errorbar(nfes, mean, yerr=std, marker="o", ms=3, capsize=2, label=key, lw=1)
        ax.set_xscale("log")
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("Euler NFE")
        ax.set_ylabel(metric)
        if metric != "nll":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: quality vs NFE (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plot_beta(summary: dict, variants: list[Variant], nfes: list[int], path: FilePath, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("curvature", None), ("fd", nfes[0]), ("fd", nfes[len(nfes) // 2]), ("fd", nfes[-1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    methods = list(dict.fromkeys(v.method for v in variants))
    for ax, (metric, nfe) in zip(axes[0], panels):
        for method in methods:
            vs = [v for v in variants if v.method == method]
            def get(v: Variant, metric: str = metric, nfe: int | None = nfe) -> dict:
                return summary[v.key]["curvature"] if metric == "curvature" else summary[v.key]["nfe"][str(nfe)]["fd"]

            if vs[0].beta is None:  # rectified flow: a horizontal line
                ax.axhline(get(vs[0])["mean"], color="k", ls="--", label=METHOD_LABELS[method])
                continue
            betas = [v.beta for v in vs]
            ax.errorbar(betas, [get(v)["mean"] for v in vs], yerr=[get(v)["std"] for v in vs], marker="o",
                        capsize=2, label=METHOD_LABELS.get(method, method))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("β (KL weight)")
        ax.set_title("curvature" if metric == "curvature" else f"FD at {nfe} Euler NFE", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: β sweep")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
