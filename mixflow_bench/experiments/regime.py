"""The regime study: where on digits does MixFlow beat flow matching with its own time law?

MixFlow changes two things against a uniform-time flow-matching control: the time law (Beta(2,1)) and the slowed
input. The time-law control ``fm-beta`` (Beta(2,1) times, no slowing) isolates the slowing. This study maps the
MixFlow gain over both controls across model capacity (MLP widths) x training length (early-stopped to long) x
gamma x Euler NFE, over seeds with paired noise (every method of a seed shares its data order and draws, and its
sampling noise), beside the measured lag: the median nearest ground-truth time of the model's sampling states
against the null's (exact interpolations) at t = 0.875. Times are data-ward (t = 1 is data).

Every width trains its base models once (one batched ensemble over seeds) with snapshots at each base length;
each length's post-trainings (both controls and MixFlow at each gamma, for each seed) form one more ensemble.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from mixflow_bench.flow import euler, uniform_grid
from mixflow_bench.metrics.toy import data_fd, finite_or_raise
from mixflow_bench.models.toy_mlp import ToyVelocityMLP
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.results.records import write_json_atomic
from mixflow_bench.toy.ensemble import Ensemble, Member, ensemble_velocity, train_ensemble
from mixflow_bench.toy.study import CONVENTION, load_study_data

CONTROLS = ("fm-control", "fm-beta")
LAG_TIME = 0.875


def arms(gammas: list[float]) -> list[tuple[str, float, bool]]:
    """(name, gamma, Beta(2,1) times) of every post-training: both controls, then MixFlow at each gamma."""
    return [("fm-control", 0.0, False), ("fm-beta", 0.0, True)] + [(f"mixflow-g{g:g}", g, True) for g in gammas]


def _lag_time_grid(steps: int) -> tuple[Tensor, int]:
    grid = uniform_grid(steps, CONVENTION)
    times = [float(CONVENTION.to_data_ward(t)) for t in grid.tolist()]
    return grid, min(range(len(times)), key=lambda i: abs(times[i] - LAG_TIME))


def run_regime_study(recipe: Recipe, out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """Train and score every cell of the recipe's ``regime:`` grid; write ``regime.json``, ``regime.png`` and
    ``summary.md`` under ``out_dir``; return the result."""
    from mixflow_bench.analysis.slow_flow import nearest_interpolation, null_curve

    if recipe.regime is None:
        raise ValueError(f"{recipe.source}: regime: missing (not a regime-study recipe)")
    console = console or Console()
    cfg = recipe.regime
    started, cpu_started = time.perf_counter(), time.process_time()
    data = load_study_data(recipe)
    out_dir = Path(out_dir)
    shape = data.train.data_shape
    seeds, names = cfg.seeds, [a[0] for a in arms(cfg.gammas)]
    opt = dict(batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay, grad_clip=cfg.grad_clip)
    reference = data.train.x.flatten(1)
    grid, lag_index = _lag_time_grid(cfg.slow_flow_steps)
    lag_t = float(CONVENTION.to_data_ward(grid[lag_index]))
    n_sf = min(cfg.slow_flow_samples, len(data.heldout.x))
    null = null_curve(
        data.heldout.x[:n_sf].flatten(1), reference, torch.tensor([lag_t]), torch.Generator().manual_seed(0)
    )
    null_median = float(torch.as_tensor(null["m"], dtype=torch.float64)[0].median())
    eval_x0 = {
        s: torch.randn((cfg.num_eval_samples, *shape), generator=torch.Generator().manual_seed(10_000 + s))
        for s in seeds
    }
    eval_y = {
        s: data.heldout.y[
            torch.randint(
                len(data.heldout.y), (cfg.num_eval_samples,), generator=torch.Generator().manual_seed(11_000 + s)
            )
        ]
        for s in seeds
    }
    sf_x0 = {s: torch.randn((n_sf, *shape), generator=torch.Generator().manual_seed(20_000 + s)) for s in seeds}
    sf_y = data.heldout.y[:n_sf]
    cells: list[dict[str, Any]] = []
    lengths = list(zip(cfg.base_steps, cfg.posttrain_steps))
    with console.status(f"[bold]{recipe.name}[/bold]") as status:
        for width in cfg.widths:
            torch.manual_seed(seeds[0])
            template = ToyVelocityMLP(
                shape, data.train.num_classes, hidden=width, depth=cfg.depth, convention=CONVENTION
            )
            inits = []
            for s in seeds:
                torch.manual_seed(s)
                inits.append(
                    ToyVelocityMLP(
                        shape, data.train.num_classes, hidden=width, depth=cfg.depth, convention=CONVENTION
                    ).state_dict()
                )
            status.update(f"[bold]{recipe.name}[/bold]: width {width}, {len(seeds)} baselines")
            base_ens = Ensemble(template, inits)
            base = train_ensemble(
                base_ens,
                [Member(s, "baseline") for s in seeds],
                data.train.x,
                data.train.y,
                steps=max(cfg.base_steps),
                stage_seed=1,
                snapshots=tuple(cfg.base_steps),
                **opt,
            )
            for base_steps, post_steps in lengths:
                status.update(f"[bold]{recipe.name}[/bold]: width {width}, {base_steps}+{post_steps} steps")
                ema0, weights0 = base.snapshots[base_steps]
                members = [Member(s, n, g, b) for s in seeds for n, g, b in arms(cfg.gammas)]
                slot = torch.tensor([seeds.index(m.seed) for m in members])
                post_ens = Ensemble(template, [base_ens.member_state(weights0, int(i)) for i in slot])
                post = train_ensemble(
                    post_ens,
                    members,
                    data.train.x,
                    data.train.y,
                    steps=post_steps,
                    stage_seed=2,
                    ema_init={k: v[slot] for k, v in ema0.items()},
                    **opt,
                )
                eval_ens = Ensemble(template, [post_ens.member_state(post.ema, i) for i in range(len(members))])
                x0 = torch.stack([eval_x0[m.seed] for m in members])
                y = torch.stack([eval_y[m.seed] for m in members])
                velocity = ensemble_velocity(eval_ens, eval_ens.params, y)
                fd: dict[tuple[int, str], dict[str, float]] = {}
                for nfe in cfg.eval_steps:
                    samples = finite_or_raise(euler(velocity, x0, uniform_grid(nfe, CONVENTION)), f"NFE {nfe}")
                    for k, m in enumerate(members):
                        fd.setdefault((m.seed, m.method), {})[str(nfe)] = data_fd(samples[k], data.heldout.x)
                sf_velocity = ensemble_velocity(eval_ens, eval_ens.params, sf_y.expand(len(members), n_sf))
                sf_start = torch.stack([sf_x0[m.seed] for m in members])
                states = euler(sf_velocity, sf_start, grid, trajectory=True)[lag_index]
                for k, m in enumerate(members):
                    nearest = nearest_interpolation(
                        states[k].reshape(n_sf, -1), sf_start[k].reshape(n_sf, -1), reference
                    )[0]
                    cells.append(
                        {
                            "width": width,
                            "base_steps": base_steps,
                            "posttrain_steps": post_steps,
                            "seed": m.seed,
                            "method": m.method,
                            "fd": fd[(m.seed, m.method)],
                            "lag": null_median - float(nearest.double().median()),
                        }
                    )
    result = {
        "recipe": recipe.name,
        "convention": "data_at_1 (t=1 is data)",
        "data": data.train.name,
        "widths": cfg.widths,
        "depth": cfg.depth,
        "lengths": [list(x) for x in lengths],
        "gammas": cfg.gammas,
        "methods": names,
        "seeds": seeds,
        "eval_steps": cfg.eval_steps,
        "num_eval_samples": cfg.num_eval_samples,
        "lag": {
            "t": lag_t,
            "null_median": null_median,
            "samples": n_sf,
            "steps": cfg.slow_flow_steps,
            "definition": "null median nearest ground-truth time - the model's, at t (positive: slowed)",
        },
        "cells": cells,
        "seconds": {"total_wall": time.perf_counter() - started, "total_cpu": time.process_time() - cpu_started},
        "torch_threads": torch.get_num_threads(),
    }
    result["gains"] = gains(result)
    write_json_atomic(out_dir / "regime.json", result)
    plot_regime(result, out_dir / "regime.png")
    from mixflow_bench.experiments.regime_report import regime_summary

    (out_dir / "summary.md").write_text(regime_summary(result) + "\n")
    return result


def gains(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (width, length, gamma, NFE, control): the paired FD gain ``FD(control) - FD(MixFlow)`` over seeds
    (positive: MixFlow better), its mean, sample std, minimum, maximum, and whether it is beyond the seed spread (every
    seed's gain positive and the mean above two standard errors); with the mean lag of MixFlow and control."""
    index = {(c["width"], c["base_steps"], c["seed"], c["method"]): c for c in result["cells"]}
    out = []
    for width in result["widths"]:
        for base_steps, post_steps in result["lengths"]:
            for g in result["gammas"]:
                arm = f"mixflow-g{g:g}"
                for control in CONTROLS:
                    for nfe in result["eval_steps"]:
                        d = np.array(
                            [
                                index[(width, base_steps, s, control)]["fd"][str(nfe)]
                                - index[(width, base_steps, s, arm)]["fd"][str(nfe)]
                                for s in result["seeds"]
                            ]
                        )
                        std = float(d.std(ddof=1)) if len(d) > 1 else 0.0
                        lag = {
                            m: float(np.mean([index[(width, base_steps, s, m)]["lag"] for s in result["seeds"]]))
                            for m in (arm, control)
                        }
                        out.append(
                            {
                                "width": width,
                                "base_steps": base_steps,
                                "posttrain_steps": post_steps,
                                "gamma": g,
                                "control": control,
                                "nfe": nfe,
                                "gain_mean": float(d.mean()),
                                "gain_std": std,
                                "gain_min": float(d.min()),
                                "gain_max": float(d.max()),
                                "beyond_spread": bool(
                                    d.min() > 0 and len(d) > 1 and d.mean() > 2 * std / math.sqrt(len(d))
                                ),
                                "lag_mixflow": lag[arm],
                                "lag_control": lag[control],
                            }
                        )
    return out


def plot_regime(result: dict[str, Any], path: Path) -> None:
    """Gain over the time-law control (fm-beta) against width, one line per training length, one panel per
    (gamma, NFE); error bars: std over seeds; filled markers: beyond the seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixflow_bench.atomic import atomic_path

    rows, cols = result["eval_steps"], result["gammas"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4 * len(cols), 2.8 * len(rows)), squeeze=False, sharex=True)
    cells = [g for g in result["gains"] if g["control"] == "fm-beta"]
    for i, nfe in enumerate(rows):
        for j, gamma in enumerate(cols):
            ax = axes[i][j]
            for k, (base_steps, post_steps) in enumerate(result["lengths"]):
                pts = [c for c in cells if c["nfe"] == nfe and c["gamma"] == gamma and c["base_steps"] == base_steps]
                pts.sort(key=lambda c: c["width"])
                w = [c["width"] for c in pts]
                ax.errorbar(
                    w,
                    [c["gain_mean"] for c in pts],
                    yerr=[c["gain_std"] for c in pts],
                    capsize=3,
                    color=f"C{k}",
                    label=f"{base_steps}+{post_steps} steps",
                    marker=None,
                )
                for c in pts:
                    ax.plot(
                        c["width"], c["gain_mean"], "o", color=f"C{k}", mfc=f"C{k}" if c["beyond_spread"] else "white"
                    )
            ax.axhline(0.0, color="0.4", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xticks(result["widths"], [str(w) for w in result["widths"]])
            ax.minorticks_off()
            ax.set_title(f"γ = {gamma:g}, Euler NFE {nfe}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("FD(fm-beta) − FD(MixFlow)")
            if i == len(rows) - 1:
                ax.set_xlabel("MLP width")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(
        f"{result['recipe']}: MixFlow gain over the time-law control (> 0: MixFlow better; "
        f"mean ± std over {len(result['seeds'])} seeds; filled: beyond the seed spread)",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
