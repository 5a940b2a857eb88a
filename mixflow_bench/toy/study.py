"""The small reproduction: does MixFlow post-training beat a flow-matching control on small real data?

For each seed: train a baseline with plain flow matching; post-train two copies of it for the same number of
steps, one with flow matching (the control) and one with MixFlow (one copy per gamma of a sweep); sample each
EMA model with Euler at several step counts from the *same* noise and labels; score with the Fréchet distance
in data space (and, on the 2-D toy, the exact NLL under the known density); then run the Slow-Flow analysis with
its null curve. Times are data-ward (t = 1 is data), the MixFlow paper's convention.
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

from mixflow_bench.atomic import atomic_path
from mixflow_bench.flow import FlowMatching, Path, TimeConvention, euler, mixflow, uniform_grid
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.results.protocol import study_protocol
from mixflow_bench.results.records import make_record, save_record, write_json_atomic
from mixflow_bench.toy.datasets import VectorDataset, load_digits_split, load_toy2d_split
from mixflow_bench.toy.metrics import data_fd, finite_or_raise, mean_nll
from mixflow_bench.toy.model import ToyVelocityMLP

CONVENTION = TimeConvention.DATA_AT_1
PATH = Path("linear", CONVENTION)


@dataclass
class StudyData:
    train: VectorDataset
    heldout: VectorDataset
    log_density: Any | None  # exact log p(x) where known (toy2d)


def load_study_data(recipe: Recipe) -> StudyData:
    """The recipe's train / held-out split."""
    if recipe.data is None:
        raise ValueError(f"{recipe.source}: data: a study recipe needs a data section")
    if recipe.data.source == "toy2d":
        train, held, ring = load_toy2d_split(
            recipe.data.num_train or 8192, recipe.data.num_heldout or 2048, recipe.data.seed
        )
        return StudyData(train, held, ring.log_density)
    if recipe.data.source == "digits":
        train, held = load_digits_split(recipe.data.num_heldout or 597, recipe.data.seed)
        return StudyData(train, held, None)
    raise ValueError(f"{recipe.source}: data.source: a study runs on toy2d or digits, not {recipe.data.source!r}")


def build_model(recipe: Recipe, data: StudyData, seed: int) -> ToyVelocityMLP:
    torch.manual_seed(seed)
    return ToyVelocityMLP(
        data.train.data_shape, data.train.num_classes, convention=CONVENTION, **recipe.model.overrides
    )


def _train_stage(
    model, objective, data: StudyData, recipe: Recipe, steps: int, seed: int, out_dir: FilePath, init: FilePath | None
) -> dict[str, Tensor]:
    """Train (or post-train from ``init``) and return the EMA weights; resumes if interrupted."""
    from mixflow_bench.train.batches import InMemoryBatches
    from mixflow_bench.train.checkpoint import load_checkpoint
    from mixflow_bench.train.engine import TrainConfig, train

    study = recipe.study
    config = TrainConfig(
        steps=steps,
        global_batch_size=study.batch_size,
        lr=study.lr,
        ema_decay=study.ema_decay,
        grad_clip=recipe.train.grad_clip if recipe.train else None,
        checkpoint_every=max(steps // 2, 1),
        log_every=max(steps // 10, 1),
        seed=seed,
        keep_last=1,
        device="cpu",
    )
    batches = InMemoryBatches(data.train.x, data.train.y, study.batch_size, seed)
    result = train(
        model,
        objective,
        batches,
        config,
        out_dir,
        init_checkpoint=init,
        progress=False,
        extra={"recipe": recipe.to_dict()},
    )
    return load_checkpoint(result.last_checkpoint)["ema"]


def _eval_inputs(data: StudyData, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Common noise and labels for every method (class frequencies of the held-out set)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x0 = torch.randn((n, *data.train.data_shape), generator=g)
    y = data.heldout.y[torch.randint(len(data.heldout.y), (n,), generator=g)]
    return x0, y


def evaluate(model: ToyVelocityMLP, data: StudyData, steps_list: list[int], x0: Tensor, y: Tensor) -> dict[str, dict]:
    """FD (and exact NLL) of Euler samples at each step count."""
    out: dict[str, dict] = {}
    model.eval()
    for steps in steps_list:
        sample = euler(lambda x, t: model(x, t, y), x0, uniform_grid(steps, CONVENTION))
        finite_or_raise(sample, f"samples at {steps} steps")
        scores = {"fd": data_fd(sample, data.heldout.x)}
        if data.log_density is not None:
            scores["nll"] = mean_nll(sample, data.log_density)
        out[str(steps)] = scores
    return out


def run_study(
    recipe: Recipe,
    out_dir: FilePath,
    *,
    gammas: list[float] | None = None,
    seeds: list[int] | None = None,
    results_dir: FilePath | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole comparison of a study recipe; write JSON and PNGs under ``out_dir``; return the summary."""
    if recipe.study is None:
        raise ValueError(f"{recipe.source}: study: missing (not a small-reproduction recipe)")
    console = console or Console()
    study = recipe.study
    gammas = gammas or [study.gamma]
    seeds = seeds if seeds is not None else study.seeds
    data = load_study_data(recipe)
    out_dir = FilePath(out_dir)
    fm = FlowMatching(PATH, t_dist="uniform", null_label=data.train.num_classes)
    variants = {"fm-control": fm}
    for g in gammas:
        name = "mixflow" if len(gammas) == 1 else f"mixflow-g{g:g}"
        variants[name] = mixflow(PATH, gamma=g, null_label=data.train.num_classes)
    methods = ["baseline", *variants]

    per_seed: dict[str, dict] = {}
    slow_flow = None
    started = time.perf_counter()
    with console.status(f"[bold]{recipe.name}[/bold]: training") as status:
        for seed in seeds:
            seed_dir = out_dir / f"seed{seed}"
            status.update(f"[bold]{recipe.name}[/bold] seed {seed}: baseline ({study.baseline_steps} steps)")
            model = build_model(recipe, data, seed)
            weights = {
                "baseline": _train_stage(
                    model, fm, data, recipe, study.baseline_steps, seed, seed_dir / "baseline", None
                )
            }
            base_ckpt = _latest(seed_dir / "baseline")
            for name, objective in variants.items():
                status.update(f"[bold]{recipe.name}[/bold] seed {seed}: {name} ({study.posttrain_steps} steps)")
                model = build_model(recipe, data, seed)
                weights[name] = _train_stage(
                    model, objective, data, recipe, study.posttrain_steps, seed, seed_dir / name, base_ckpt
                )
            status.update(f"[bold]{recipe.name}[/bold] seed {seed}: evaluating")
            x0, y = _eval_inputs(data, study.num_eval_samples, seed)
            models = {}
            for name in methods:
                m = build_model(recipe, data, seed)
                m.load_state_dict(weights[name])
                models[name] = m.eval()
            per_seed[str(seed)] = {name: evaluate(models[name], data, study.eval_steps, x0, y) for name in methods}
            if slow_flow is None:
                status.update(f"[bold]{recipe.name}[/bold]: Slow-Flow analysis")
                slow_flow = _slow_flow(models, data, study, out_dir, recipe.name)

    summary = _summarize(per_seed, methods, study.eval_steps)
    floor = data_fd(data.train.x[: len(data.heldout.x)], data.heldout.x)
    result = {
        "recipe": recipe.name,
        "convention": "data_at_1 (t=1 is data)",
        "methods": methods,
        "seeds": seeds,
        "eval_steps": study.eval_steps,
        "per_seed": per_seed,
        "summary": summary,
        "data_fd_floor": floor,
        "slow_flow": slow_flow,
        "seconds": time.perf_counter() - started,
    }
    write_json_atomic(out_dir / "study.json", result)
    _plot(summary, methods, study.eval_steps, out_dir / "fd_vs_steps.png", recipe.name)
    for m in methods:  # one record per method: mean and std over seeds at each step count
        metrics = {}
        for steps in study.eval_steps:
            for key, v in summary[m][str(steps)].items():
                metrics[f"{key}@{steps}"] = v["mean"]
                metrics[f"{key}@{steps}_std"] = v["std"]
        record = make_record(
            "study",
            metrics,
            name=f"study-{recipe.name}-{m}",
            experiment=recipe.name,
            method=m,
            guidance="none",
            seeds=seeds,
            recipe=recipe.to_dict(),
            protocol=study_protocol(study, metrics),
            note=f"small CPU reproduction, {len(seeds)} seeds, Euler sampling; lower is better",
        )
        save_record(record, results_dir)
    print_study(result, console)
    return result


def _latest(run_dir: FilePath) -> FilePath:
    from mixflow_bench.train.checkpoint import latest_checkpoint

    path = latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    return path


def _slow_flow(models: dict, data: StudyData, study, out_dir: FilePath, title: str) -> dict | None:
    """Slow-Flow curves of every model, the null curve, and on toy2d the exact velocity field (a perfect model)."""
    from mixflow_bench.analysis.exact_velocity import ring_velocity
    from mixflow_bench.analysis.slow_flow import analyze

    n = min(study.slow_flow_samples, len(data.heldout.x))
    g = torch.Generator().manual_seed(20_000)
    x0 = torch.randn((n, *data.train.data_shape), generator=g).flatten(1)
    y = data.heldout.y[:n]
    shape = data.train.data_shape

    def velocity(model):
        return lambda x, t: model(x.reshape(-1, *shape), t, y[: len(x)]).flatten(1)

    curves = {name: velocity(m) for name, m in models.items()}
    if data.train.name == "toy2d":
        ring = ring_velocity()
        curves["exact field"] = lambda x, t: ring(x, t).to(x.dtype)
    with torch.no_grad():
        return analyze(
            curves,
            x0,
            data.train.x.flatten(1),
            data.heldout.x[:n].flatten(1),
            study.slow_flow_steps,
            out_dir,
            f"Slow Flow: {title}",
        )


def _summarize(per_seed: dict, methods: list[str], steps_list: list[int]) -> dict:
    out: dict = {}
    for m in methods:
        out[m] = {}
        for steps in steps_list:
            keys = per_seed[next(iter(per_seed))][m][str(steps)].keys()
            out[m][str(steps)] = {}
            for key in keys:
                vals = np.array([per_seed[s][m][str(steps)][key] for s in per_seed])
                out[m][str(steps)][key] = {
                    "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "values": vals.tolist(),
                }
    return out


def print_study(result: dict, console: Console) -> None:
    """Rich table: metric per step count, mean ± std over seeds, best per column in bold."""
    summary, methods, steps_list = result["summary"], result["methods"], result["eval_steps"]
    keys = list(summary[methods[0]][str(steps_list[0])].keys())
    for key in keys:
        table = Table(
            title=f"{result['recipe']}: {key.upper()} (mean ± std over {len(result['seeds'])} seeds; lower is better)"
        )
        table.add_column("method")
        for steps in steps_list:
            table.add_column(f"{steps} steps", justify="right")
        best = {s: min(summary[m][str(s)][key]["mean"] for m in methods) for s in steps_list}
        for m in methods:
            cells = []
            for s in steps_list:
                v = summary[m][str(s)][key]
                text = f"{v['mean']:.4f} ± {v['std']:.4f}"
                cells.append(f"[bold]{text}[/bold]" if math.isclose(v["mean"], best[s]) else text)
            table.add_row(m, *cells)
        console.print(table)
    if "data_fd_floor" in result:
        console.print(f"FD between train and held-out data (the floor): {result['data_fd_floor']:.4f}")


def _plot(summary: dict, methods: list[str], steps_list: list[int], path: FilePath, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(summary[methods[0]][str(steps_list[0])].keys())
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for m in methods:
            mean = np.array([summary[m][str(s)][key]["mean"] for s in steps_list])
            std = np.array([summary[m][str(s)][key]["std"] for s in steps_list])
            ax.errorbar(steps_list, mean, yerr=std, marker="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xticks(steps_list, [str(s) for s in steps_list])
        ax.set_xlabel("Euler steps")
        ax.set_ylabel(key.upper())
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
