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

from mixflow_bench.analysis.exact_velocity import GaussianMixtureField
from mixflow_bench.atomic import atomic_path
from mixflow_bench.data.toy import GaussianRing, VectorDataset, load_digits_split, load_toy2d_split
from mixflow_bench.flow import Path, TimeConvention, euler, uniform_grid
from mixflow_bench.metrics.toy import data_fd, finite_or_raise, mean_nll
from mixflow_bench.models.toy_mlp import ToyVelocityMLP
from mixflow_bench.progress import step_progress
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.results.protocol import study_protocol
from mixflow_bench.results.records import make_record, save_record, write_json_atomic
from mixflow_bench.runs import records_dir
from mixflow_bench.toy.ensemble import Ensemble, Member, ensemble_velocity, train_ensemble
from mixflow_bench.toy.report import summary_metrics

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


def exact_field(data: StudyData) -> GaussianMixtureField:
    """The data's exact fields: the ring in closed form on toy2d, the class-conditional training set on digits."""
    if data.train.name == "toy2d":
        ring = GaussianRing()
        return GaussianMixtureField(ring.centers(), ring.std)
    return GaussianMixtureField(data.train.x.flatten(1), 0.0, data.train.y)


def _exact_fns(field: GaussianMixtureField, gammas: list[float], shape: tuple[int, ...]) -> dict[str, Any]:
    """``name -> f(x (N, *shape), t (N,), y (N,))`` for the FM optimum and the MixFlow optimum at each gamma."""
    fns: dict[str, Any] = {"exact FM-optimal": lambda x, t, y: field.fm(x.flatten(1), t, y).reshape(x.shape)}
    for g in gammas:
        fns[f"exact MixFlow-optimal g{g:g}"] = lambda x, t, y, g=g: field.mixflow(x.flatten(1), t, y, g).reshape(
            x.shape
        )
    return fns


def run_study(
    recipe: Recipe,
    out_dir: FilePath,
    *,
    gammas: list[float] | None = None,
    seeds: list[int] | None = None,
    results_dir: FilePath | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the whole comparison of a study recipe; write JSON and PNGs under ``out_dir``; return the summary.

    All seeds and methods train together: the baselines as one ensemble, then every post-training (FM control
    and MixFlow at each gamma, for each seed) as a second one, initialised from its seed's baseline.
    """
    if recipe.study is None:
        raise ValueError(f"{recipe.source}: study: missing (not a small-reproduction recipe)")
    console = console or Console()
    study = recipe.study
    gammas = gammas or study.gammas or [study.gamma]
    seeds = seeds if seeds is not None else study.seeds
    started, cpu_started = time.perf_counter(), time.process_time()
    data = load_study_data(recipe)
    out_dir = FilePath(out_dir)
    shape = data.train.data_shape
    # the controls: flow matching with uniform times, and with MixFlow's Beta(2,1) time law but no slowing
    variants = [("fm-control", 0.0, False), ("fm-beta", 0.0, True)] + [
        ("mixflow" if len(gammas) == 1 else f"mixflow-g{g:g}", g, True) for g in gammas
    ]
    methods = ["baseline"] + [v[0] for v in variants]
    template = build_model(recipe, data, seeds[0])
    grad_clip = recipe.train.grad_clip if recipe.train else None
    opt_kwargs = dict(batch_size=study.batch_size, lr=study.lr, ema_decay=study.ema_decay, grad_clip=grad_clip)

    with step_progress() as prog:
        task = prog.add_task(f"{recipe.name}: {len(seeds)} baselines", total=study.baseline_steps)
        base_ens = Ensemble(template, [build_model(recipe, data, s).state_dict() for s in seeds])
        base = train_ensemble(
            base_ens,
            [Member(s, "baseline") for s in seeds],
            data.train.x,
            data.train.y,
            steps=study.baseline_steps,
            stage_seed=1,
            advance=lambda n, task=task: prog.advance(task, n),
            **opt_kwargs,
        )
        members = [Member(s, name, g, beta) for s in seeds for name, g, beta in variants]
        task = prog.add_task(f"{recipe.name}: {len(members)} post-trainings", total=study.posttrain_steps)
        slot = torch.tensor([seeds.index(m.seed) for m in members])
        post_ens = Ensemble(template, [base_ens.member_state(base.weights, int(i)) for i in slot])
        post = train_ensemble(
            post_ens,
            members,
            data.train.x,
            data.train.y,
            steps=study.posttrain_steps,
            stage_seed=2,
            ema_init={k: v[slot] for k, v in base.ema.items()},
            advance=lambda n, task=task: prog.advance(task, n),
            **opt_kwargs,
        )
        train_s = time.perf_counter() - started

        all_members = [Member(s, "baseline") for s in seeds] + members
        for i, m in enumerate(all_members):  # the EMA weights of every model, loadable by analysis/toy_checkpoints
            ema_i = {k: (base.ema[k][i] if i < len(seeds) else post.ema[k][i - len(seeds)]).clone() for k in base.ema}
            with atomic_path(out_dir / f"seed{m.seed}" / f"{m.method}.pt", suffix=".pt") as tmp:
                torch.save({"ema": ema_i, "model_kwargs": {"data_shape": list(shape)}}, tmp)
        task = prog.add_task(f"{recipe.name}: sampling", total=len(study.eval_steps), unit="step counts")
        # every model of every seed in one ensemble: baselines first, then the post-trainings in member order
        ema_all = {k: torch.cat([base.ema[k], post.ema[k]]) for k in base.ema}
        eval_ens = Ensemble(template, [base_ens.member_state(ema_all, i) for i in range(len(all_members))])
        inputs = {s: _eval_inputs(data, study.num_eval_samples, s) for s in seeds}
        x0 = torch.stack([inputs[m.seed][0] for m in all_members])
        y = torch.stack([inputs[m.seed][1] for m in all_members])
        velocity = ensemble_velocity(eval_ens, eval_ens.params, y)
        per_seed: dict[str, dict] = {str(s): {} for s in seeds}
        for steps in study.eval_steps:
            samples = euler(velocity, x0, uniform_grid(steps, CONVENTION))
            finite_or_raise(samples, f"samples at {steps} steps")
            for k, m in enumerate(all_members):
                per_seed[str(m.seed)].setdefault(m.method, {})[str(steps)] = _scores(samples[k], data)
            prog.advance(task, 1)
        field = exact_field(data)
        exact = _exact_fns(field, gammas, shape)
        task = prog.add_task(f"{recipe.name}: exact fields", total=len(seeds), unit="seeds")
        for s in seeds:
            xs, ys = inputs[s]
            for name, fn in exact.items():
                for steps in study.eval_steps:
                    sample = euler(
                        lambda x, t, fn=fn, ys=ys: fn(x, t, ys), xs.double(), uniform_grid(steps, CONVENTION)
                    )
                    per_seed[str(s)].setdefault(name, {})[str(steps)] = _scores(sample.float(), data)
            prog.advance(task, 1)
        noise_level = measure_noise_level(field, data, gammas)
        sample_s = time.perf_counter() - started - train_s
        task = prog.add_task(f"{recipe.name}: Slow-Flow analysis", total=1, unit="analyses")
        slow_flow = _slow_flow_all(eval_ens, all_members, exact, data, study, seeds, out_dir, recipe.name)
        prog.advance(task, 1)

    table_methods = methods + list(exact)
    summary = _summarize(per_seed, table_methods, study.eval_steps)
    floor = data_fd(data.train.x[: len(data.heldout.x)], data.heldout.x)
    result = {
        "recipe": recipe.name,
        "convention": "data_at_1 (t=1 is data)",
        "methods": table_methods,
        "trained_methods": methods,
        "gammas": gammas,
        "seeds": seeds,
        "eval_steps": study.eval_steps,
        "num_eval_samples": study.num_eval_samples,
        "baseline_steps": study.baseline_steps,
        "posttrain_steps": study.posttrain_steps,
        "per_seed": per_seed,
        "summary": summary,
        "data_fd_floor": floor,
        "slow_flow": slow_flow,
        "noise_level": noise_level,
        "seconds": {
            "train": train_s,
            "sample_and_exact": sample_s,
            "total_wall": time.perf_counter() - started,
            "total_cpu": time.process_time() - cpu_started,
        },
        "torch_threads": torch.get_num_threads(),
    }
    write_json_atomic(out_dir / "study.json", result)
    _plot(summary, table_methods, study.eval_steps, out_dir / "fd_vs_steps.png", recipe.name)
    for m in methods:  # one record per trained method: mean and std over seeds at each step count
        metrics = summary_metrics(summary[m], study.eval_steps)
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
        save_record(record, results_dir or records_dir(out_dir))
    print_study(result, console)
    return result


NOISE_LEVEL_TIMES = [0.25, 0.5, 0.625, 0.75, 0.875]


def measure_noise_level(field: GaussianMixtureField, data: StudyData, gammas: list[float]) -> dict[str, Any]:
    """Posterior spread of the input's time relative to the prior's, on the training data
    (:mod:`mixflow_bench.analysis.noise_level`): over [0, 1] (``uniform``) and in MixFlow's window at each gamma
    (``mixflow-g<gamma>``)."""
    from mixflow_bench.analysis.noise_level import noise_level_information

    y = data.train.y if field.center_labels is not None else None
    out: dict[str, Any] = {"samples": 100, "grid": 200, "data": "training set"}
    for name, g in [("uniform", None)] + [(f"mixflow-g{g:g}", g) for g in gammas]:
        gen = torch.Generator().manual_seed(30_000)
        out[name] = noise_level_information(field, data.train.x, y, NOISE_LEVEL_TIMES, 100, gen, gamma=g)
    return out


def _scores(sample: Tensor, data: StudyData) -> dict[str, float]:
    scores = {"fd": data_fd(sample, data.heldout.x)}
    if data.log_density is not None:
        scores["nll"] = mean_nll(sample, data.log_density)
    return scores


def _slow_flow_all(
    eval_ens: Ensemble, members: list[Member], exact: dict, data: StudyData, study, seeds, out_dir, title
) -> dict[str, Any]:
    """Slow-Flow curves of every model and exact field for every seed, the null per seed, and their spread."""
    from mixflow_bench.analysis.slow_flow import nearest_interpolation, null_curve, summarize

    n = min(study.slow_flow_samples, len(data.heldout.x))
    shape = data.train.data_shape
    reference = data.train.x.flatten(1)
    grid = uniform_grid(study.slow_flow_steps, CONVENTION)
    times = [float(CONVENTION.to_data_ward(t)) for t in grid.tolist()]
    x0s = {s: torch.randn((n, *shape), generator=torch.Generator().manual_seed(20_000 + s)) for s in seeds}
    y = data.heldout.y[:n]
    x0 = torch.stack([x0s[m.seed] for m in members])
    states = euler(ensemble_velocity(eval_ens, eval_ens.params, y.expand(len(members), n)), x0, grid, trajectory=True)

    def curve(traj: list[Tensor], noise: Tensor) -> dict[str, Any]:
        ms = [nearest_interpolation(x.reshape(n, -1), noise.reshape(n, -1), reference)[0] for x in traj]
        return summarize({"t": times, "m": torch.stack(ms)})

    per_seed: dict[str, dict[str, Any]] = {str(s): {} for s in seeds}
    for k, m in enumerate(members):
        per_seed[str(m.seed)][m.method] = curve([st[k] for st in states], x0s[m.seed])
    for s in seeds:
        for name, fn in exact.items():
            traj = euler(lambda x, t, fn=fn: fn(x, t, y), x0s[s].double(), grid, trajectory=True)
            per_seed[str(s)][name] = curve(traj, x0s[s])
        per_seed[str(s)]["null"] = summarize(
            null_curve(data.heldout.x[:n].flatten(1), reference, torch.tensor(times), torch.Generator().manual_seed(s))
        )
    labels = list(per_seed[str(seeds[0])])
    spread = {}
    for label in labels:
        med = torch.tensor([per_seed[str(s)][label]["percentiles"]["50"] for s in seeds], dtype=torch.float64)
        spread[label] = {
            "median_mean": med.mean(0).tolist(),
            "median_std": (med.std(0) if len(seeds) > 1 else torch.zeros_like(med[0])).tolist(),
        }
    out = {
        "analysis": "slow-flow",
        "time_convention": "data-ward (t = 1 is data)",
        "steps": study.slow_flow_steps,
        "num_samples": n,
        "num_reference": len(reference),
        "seeds": seeds,
        "t": times,
        "per_seed": per_seed,
        "median_over_seeds": spread,
    }
    write_json_atomic(out_dir / "slow_flow.json", out)
    _plot_slow_flow_spread(out, out_dir / "slow_flow.png", f"Slow Flow: {title} ({len(seeds)} seeds)")
    return out


def _plot_slow_flow_spread(sf: dict, path: FilePath, title: str) -> None:
    """Median slowed time over sampling time: mean over seeds, band of +- one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls=":", label="y = x")
    t = np.array(sf["t"])
    for label, v in sf["median_over_seeds"].items():
        mean, std = np.array(v["median_mean"]), np.array(v["median_std"])
        style = {"ls": "--", "color": "black"} if label == "null" else {"ls": "-." if "exact" in label else "-"}
        line = ax.plot(t, mean, marker="o", ms=2.5, lw=1.4, label=label, **style)[0]
        ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sampling timestep t (data-ward, 1 = data)")
    ax.set_ylabel("median nearest ground-truth timestep m(t)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


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
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys) + 2.5, 4), squeeze=False)
    trained = [m for m in methods if not m.startswith("exact")]
    colors = {m: f"C{i}" for i, m in enumerate(trained)}
    for m in methods:  # an exact field takes the colour of the trained method it is the optimum of
        if m.startswith("exact"):
            g = m.rsplit(" g", 1)[-1] if " g" in m else None
            twin = "fm-control" if g is None else next((t for t in trained if t.endswith(f"g{g}")), "mixflow")
            colors[m] = colors.get(twin, "black")
    for ax, key in zip(axes[0], keys):
        for m in methods:
            mean = np.array([summary[m][str(s)][key]["mean"] for s in steps_list])
            std = np.array([summary[m][str(s)][key]["std"] for s in steps_list])
            style = {"ls": "--", "marker": "x"} if m.startswith("exact") else {"ls": "-", "marker": "o"}
            ax.errorbar(steps_list, mean, yerr=std, capsize=3, label=m, color=colors[m], **style)
        ax.set_xscale("log")
        ax.set_xticks(steps_list, [str(s) for s in steps_list])
        ax.minorticks_off()
        ax.set_xlabel("Euler steps")
        ax.set_ylabel(key.upper())
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{title} (dashed: exact fields)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
