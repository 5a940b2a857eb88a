"""The small GMFlow reproduction: the paper's 2-D checkerboard with its toy MLP, on the CPU.

For each seed, train GMFlow's toy MLP with K Gaussian components (transition loss, ratio lambda) for every K of
the recipe, and the same MLP with a K = 1, s = 1 head trained with the plain L2 flow-matching loss for the same
number of steps (the baseline). Sample every model from the *same* noise at every NFE: the GM models with the
GM solvers of the recipe (GM-SDE, GM-SDE 2, GM-ODE, GM-ODE 2; ODE sub-steps ``ceil(128/NFE)``), the baseline
with Euler. Score with :func:`~mixflow_bench.toy.checkerboard.checkerboard_metrics` and draw the histograms.
Times are GMFlow's ``DATA_AT_0`` (t = 0 data, t = 1 noise).
"""

from __future__ import annotations

import time
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from mixflow_bench.atomic import atomic_write_text
from mixflow_bench.flow.gmflow import SOLVERS, GMFlowObjective, GMFlowToyMLP, default_substeps, gmflow_grid
from mixflow_bench.flow.samplers import euler
from mixflow_bench.progress import step_progress
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.results.protocol import study_protocol
from mixflow_bench.results.records import make_record, save_record, write_json_atomic
from mixflow_bench.runs import records_dir
from mixflow_bench.samplers import get_sampler, sampler_names
from mixflow_bench.toy.checkerboard import checkerboard_metrics, histogram_grid, sample_checkerboard
from mixflow_bench.toy.report import summary_metrics

BASELINE = "fm-euler"
METRICS = ("in_support", "chi2", "centre_edge", "energy")
HIGHER_IS_BETTER = {"in_support"}


def _train(model: GMFlowToyMLP, objective: GMFlowObjective, x: torch.Tensor, recipe: Recipe, seed: int, out: FilePath):
    """Train with the project's engine (AdamW + EMA, resumable); return the EMA weights."""
    from mixflow_bench.toy.engine_training import train_small_model

    study = recipe.study
    return train_small_model(
        model, objective, x, torch.zeros(len(x), dtype=torch.long), steps=study.baseline_steps,
        batch_size=study.batch_size, lr=study.lr, ema_decay=study.ema_decay,
        grad_clip=recipe.train.grad_clip if recipe.train else None, seed=seed, out_dir=out,
        recipe=recipe.to_dict(), fused_adamw=False,
    )  # fmt: skip


def method_names(components: list[int], solvers: list[str]) -> list[str]:
    return [BASELINE] + [f"{get_sampler(s).display}, K={k}" for k in components for s in solvers]


def sample_method(model: GMFlowToyMLP, solver: str, nfe: int, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """Samples (N, 2) of one model with one solver at ``nfe`` network evaluations (DATA_AT_0 grids)."""
    x = noise.reshape(len(noise), 2, 1, 1)
    with torch.no_grad():
        if solver == "euler":
            return euler(lambda z, t: model(z, t).mean(), x, gmflow_grid(nfe)).reshape(-1, 2)
        spec = SOLVERS[solver]
        gm_fn = lambda z, t: model(z, t)  # noqa: E731
        if solver.startswith("gm-sde"):
            g = torch.Generator().manual_seed(30_000 + seed)
            out = spec["fn"](gm_fn, x, gmflow_grid(nfe), order=spec["order"], generator=g)
        else:
            n = default_substeps(nfe)
            out = spec["fn"](gm_fn, x, gmflow_grid(nfe * n), substeps=n, order=spec["order"])
    return out.reshape(-1, 2)


def run_gmflow_study(
    recipe: Recipe,
    out_dir: FilePath,
    *,
    seeds: list[int] | None = None,
    results_dir: FilePath | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the checkerboard comparison of a ``study.kind: gmflow`` recipe; write JSON, a table and PNGs."""
    study = recipe.study
    if study is None or study.kind != "gmflow":
        raise ValueError(f"{recipe.source}: study.kind: not a GMFlow study recipe")
    console = console or Console()
    seeds = seeds if seeds is not None else study.seeds
    out_dir = FilePath(out_dir)
    overrides = dict(recipe.model.overrides)
    names = method_names(study.components, study.solvers)
    per_seed: dict[str, dict] = {}
    panels: dict[str, dict[str, np.ndarray]] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    num_train = (recipe.data.num_train if recipe.data else None) or 65_536
    with step_progress() as prog:
        num_models = len(seeds) * (len(study.components) + 1)  # each K and the flow-matching baseline, per seed
        task = prog.add_task(f"{recipe.name}: models trained", total=num_models, unit="models")
        for seed in seeds:
            data = sample_checkerboard(num_train, torch.Generator().manual_seed(1_000 + seed))
            reference = sample_checkerboard(study.num_eval_samples, torch.Generator().manual_seed(2_000 + seed))
            noise = torch.randn(study.num_eval_samples, 2, generator=torch.Generator().manual_seed(10_000 + seed))
            models: dict[str, GMFlowToyMLP] = {}
            for k in [None, *study.components]:  # None: the flow-matching baseline (K = 1, s = 1, lambda = 1)
                label = "baseline" if k is None else f"k{k}"
                torch.manual_seed(seed)
                kwargs = {"num_gaussians": 1, "constant_logstd": 0.0} if k is None else {"num_gaussians": k}
                model = GMFlowToyMLP(**kwargs, **overrides)
                objective = GMFlowObjective(trans_ratio=1.0 if k is None else study.trans_ratio)
                model.load_state_dict(_train(model, objective, data, recipe, seed, out_dir / f"seed{seed}" / label))
                models[label] = model.eval()
                prog.advance(task, 1)
            scores: dict[str, dict] = {}
            for name in names:
                model, solver = _resolve(name, models)
                scores[name] = {}
                for nfe in study.eval_steps:
                    samples = sample_method(model, solver, nfe, noise, seed)
                    scores[name][str(nfe)] = checkerboard_metrics(samples, reference)
                    if seed == seeds[0]:
                        panels.setdefault(name, {})[f"NFE {nfe}"] = samples.numpy()
            per_seed[str(seed)] = scores
    summary = _summarize(per_seed, names, study.eval_steps)
    result = {
        "recipe": recipe.name,
        "convention": "data_at_0 (t=0 is data), linear path",
        "methods": names,
        "seeds": seeds,
        "eval_steps": study.eval_steps,
        "num_eval_samples": study.num_eval_samples,
        "train_steps": study.baseline_steps,
        "batch_size": study.batch_size,
        "model": {"name": "gmflow-toy-mlp", **overrides},
        "trans_ratio": study.trans_ratio,
        "per_seed": per_seed,
        "summary": summary,
        "data_reference": checkerboard_metrics(
            sample_checkerboard(study.num_eval_samples, torch.Generator().manual_seed(3_000)), reference
        ),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "threads": torch.get_num_threads(),
    }
    write_json_atomic(out_dir / "study.json", result)
    atomic_write_text(out_dir / "table.md", markdown_table(result))
    histogram_grid(
        panels,
        out_dir / "histograms.png",
        f"{recipe.name}: seed {seeds[0]}, {study.num_eval_samples} samples, 100x100 bins on [-4.2, 4.2]^2",
        bins=100,
    )
    for name in names:
        metrics = summary_metrics(summary[name], study.eval_steps)
        record = make_record(
            "study",
            metrics,
            name=f"study-{recipe.name}-{name.lower().replace(', ', '-').replace(' ', '').replace('=', '')}",
            experiment=recipe.name,
            method=name,
            guidance="none",
            seeds=seeds,
            num_samples=study.num_eval_samples,
            recipe=recipe.to_dict(),
            protocol=study_protocol(study, metrics, solver_of(name)),
            note="small CPU reproduction of the GMFlow checkerboard; metrics at each NFE, mean and std over seeds",
        )
        save_record(record, results_dir or records_dir(out_dir))
    print_gmflow_study(result, console)
    console.print(f"wrote {out_dir}/ (study.json, table.md, histograms.png) in {result['seconds']:.0f} s")
    return result


def solver_of(name: str) -> str:
    """The registered sampler of a study row (``fm-euler`` -> ``euler``, ``GM-SDE 2, K=8`` -> ``gm-sde2``)."""
    if name == BASELINE:
        return "euler"
    label = name.split(", K=")[0]
    return next(s for s in sampler_names("gm") if get_sampler(s).display == label)


def _resolve(name: str, models: dict[str, GMFlowToyMLP]) -> tuple[GMFlowToyMLP, str]:
    if name == BASELINE:
        return models["baseline"], "euler"
    return models[f"k{name.split(', K=')[1]}"], solver_of(name)


def _summarize(per_seed: dict, names: list[str], steps: list[int]) -> dict:
    out: dict = {}
    for name in names:
        out[name] = {}
        for nfe in steps:
            out[name][str(nfe)] = {}
            for key in METRICS:
                vals = np.array([per_seed[s][name][str(nfe)][key] for s in per_seed])
                out[name][str(nfe)][key] = {
                    "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "values": vals.tolist(),
                }
    return out


def _cell(v: dict) -> str:
    return f"{v['mean']:.3f} ± {v['std']:.3f}"


def markdown_table(result: dict) -> str:
    """One markdown table per metric: methods x NFE, mean ± std over seeds."""
    lines = [
        f"# {result['recipe']}",
        "",
        f"Seeds {result['seeds']}; {result['num_eval_samples']} samples per cell from the same noise; "
        f"{result['train_steps']} training steps at batch {result['batch_size']} per model; "
        f"model {result['model']}; transition ratio {result['trans_ratio']}; wall time {result['seconds']:.0f} s"
        + (f" ({result['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in result else "")
        + f" on {result['threads']} threads. Fresh data scored against the same reference: "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["data_reference"].items())
        + ".",
        "",
    ]
    descriptions = {
        "in_support": "in-support fraction (higher is better; data = 1)",
        "chi2": "chi-square of the 8-square occupancy (lower is better; uniform = 0)",
        "centre_edge": "centre-vs-edge mass per square (data = 1; > 1 centre-heavy, < 1 edge-heavy)",
        "energy": "energy distance to fresh data (lower is better)",
    }
    steps = result["eval_steps"]
    for key in METRICS:
        lines += [f"## {descriptions[key]}", "", "| method | " + " | ".join(f"NFE {s}" for s in steps) + " |"]
        lines.append("|---|" + "---:|" * len(steps))
        for name in result["methods"]:
            lines.append(f"| {name} | " + " | ".join(_cell(result["summary"][name][str(s)][key]) for s in steps) + " |")
        lines.append("")
    return "\n".join(lines)


def print_gmflow_study(result: dict, console: Console) -> None:
    steps = result["eval_steps"]
    for key in METRICS:
        table = Table(title=f"{result['recipe']}: {key} (mean ± std over {len(result['seeds'])} seeds)")
        table.add_column("method")
        for s in steps:
            table.add_column(f"NFE {s}", justify="right")
        for name in result["methods"]:
            table.add_row(name, *(_cell(result["summary"][name][str(s)][key]) for s in steps))
        console.print(table)
