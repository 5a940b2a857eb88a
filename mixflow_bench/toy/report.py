"""The results write-up of the small studies and the GPU shapes study, generated from their JSON outputs.

Every number in a sentence is computed here from ``results/studies/<recipe>/study.json`` and
``results/shapes-sit-s/shapes_study.json``; only the explanation of *why* is fixed text, and it is printed
beside the numbers that it explains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _table(result: dict[str, Any], key: str) -> list[str]:
    steps = result["eval_steps"]
    head = "| Method | " + " | ".join(f"{key.upper()} @ {s}" for s in steps) + " |"
    lines = [head, "|---|" + "---:|" * len(steps)]
    for m in result["methods"]:
        cells = []
        for s in steps:
            v = result["summary"][m][str(s)][key]
            cells.append(f"{_fmt(v['mean'])} ± {_fmt(v['std'])}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _mean(result: dict, method: str, steps: int, key: str = "fd") -> float:
    return result["summary"][method][str(steps)][key]["mean"]


def _nearest_index(times: list[float], t: float) -> int:
    return min(range(len(times)), key=lambda i: abs(times[i] - t))


CONTROL_NAMES = {"fm-control": "the uniform-time FM control", "fm-beta": "the time-law control fm-beta"}


def _ratio_phrase(ratios: list[float], what: str) -> str:
    """``better than X at 3 of 4 step counts (FD ratio 0.91–1.02)``; a ratio < 1 is better (lower FD)."""
    better = sum(r < 1 for r in ratios)
    span = f"FD ratio {min(ratios):.2f}–{max(ratios):.2f}"
    if better == len(ratios):
        return f"better than {what} at every step count ({span})"
    if better == 0:
        return f"worse than {what} at every step count ({span})"
    return f"better than {what} at {better} of {len(ratios)} step counts ({span})"


def _percent_worse(ratios: list[float]) -> str:
    """``46–72% worse than`` (or ``better than`` / mixed) from ratios trained / optimum."""
    pct = [100 * (r - 1) for r in ratios]
    if min(pct) >= 0:
        return f"{min(pct):.0f}–{max(pct):.0f}% worse than"
    if max(pct) <= 0:
        return f"{abs(max(pct)):.0f}–{abs(min(pct)):.0f}% better than"
    return f"between {-min(pct):.0f}% better and {max(pct):.0f}% worse than"


def study_sentences(result: dict[str, Any]) -> list[str]:
    """Facts about one CPU study, each computed from its numbers (``tests/test_toy_report.py`` checks every
    number and comparison against the JSON)."""
    out = []
    steps = result["eval_steps"]
    summary = result["summary"]
    mix = [m for m in result["trained_methods"] if m.startswith("mixflow")]
    controls = [c for c in CONTROL_NAMES if c in summary]
    if {"fm-control", "fm-beta"} <= set(summary):
        ratios = [_mean(result, "fm-beta", s) / _mean(result, "fm-control", s) for s in steps]
        out.append(
            f"The time law alone: flow matching with Beta(2,1) times (fm-beta) is "
            f"{_ratio_phrase(ratios, 'flow matching with uniform times (fm-control)')}."
        )
    for m in mix:
        g = m.split("-g")[-1] if "-g" in m else str(result["gammas"][0])
        verdicts = [
            _ratio_phrase([_mean(result, m, s) / _mean(result, c, s) for s in steps], CONTROL_NAMES[c])
            for c in controls
        ]
        sentence = f"MixFlow γ = {g} is " + "; it is ".join(verdicts)
        exact = f"exact MixFlow-optimal g{g}"
        if exact in summary:
            s_ref = 16 if 16 in steps else steps[-1]
            ratios = [_mean(result, m, s) / _mean(result, exact, s) for s in steps]
            sentence += (
                f"; its FD is {_percent_worse(ratios)} the exact MixFlow optimum's across step counts "
                f"({_fmt(_mean(result, m, s_ref))} vs {_fmt(_mean(result, exact, s_ref))} at {s_ref} steps)"
            )
        out.append(sentence + ".")
    if "exact FM-optimal" in summary:
        s_ref = 16 if 16 in steps else steps[-1]
        ratios = [_mean(result, "fm-control", s) / _mean(result, "exact FM-optimal", s) for s in steps]
        out.append(
            f"The trained FM control's FD is {_percent_worse(ratios)} the exact FM optimum's across step counts "
            f"({_fmt(_mean(result, 'fm-control', s_ref))} vs {_fmt(_mean(result, 'exact FM-optimal', s_ref))} at "
            f"{s_ref} steps); the floor (FD between training and held-out data) is {_fmt(result['data_fd_floor'])}."
        )
    out += noise_level_sentences(result)
    sf = result.get("slow_flow")
    if sf:
        i = _nearest_index(sf["t"], 0.875)
        parts = []
        for label, v in sf["median_over_seeds"].items():
            parts.append(f"{label} {v['median_mean'][i]:.3f} ± {v['median_std'][i]:.3f}")
        med = {k: v["median_mean"][i] for k, v in sf["median_over_seeds"].items()}
        if {"fm-control", "null", "exact FM-optimal"} <= set(med):
            fc, null = med["fm-control"], med["null"]
            moves = []
            for m in mix:
                side = "further from" if abs(med[m] - null) > abs(fc - null) else "closer to"
                moves.append(f"{m} {med[m]:.3f} ({side} the null)")
            out.append(
                f"At t = {sf['t'][i]:.3f} the FM control's median slowed time is {fc:.3f}, the exact FM field's "
                f"{med['exact FM-optimal']:.3f} and the null's {null:.3f}; MixFlow moves it to "
                + ", ".join(moves)
                + "."
            )
        out.append(
            f"Slow-Flow, median slowed time m at t = {sf['t'][i]:.3f} (mean ± std over {len(sf['seeds'])} seeds, "
            f"{sf['num_samples']} trajectories of {sf['steps']} Euler steps each): " + "; ".join(parts) + "."
        )
    secs = result.get("seconds", {})
    if secs:
        out.append(
            f"Run time of this study: {secs['total_wall']:.0f} s wall, {secs['total_cpu']:.0f} s CPU "
            f"(training {secs['train']:.0f} s wall)."
        )
    return out


def _span_from(values: list[float], times: list[float], t_min: float) -> tuple[float, float]:
    kept = [100 * v for v, t in zip(values, times) if t >= t_min]
    return min(kept), max(kept)


def noise_level_sentences(result: dict[str, Any]) -> list[str]:
    """What the input tells about its noise level (``noise_level`` of the study JSON), for t >= 0.5."""
    info = result.get("noise_level")
    if not info:
        return []
    uni = info["uniform"]
    lo, hi = _span_from(uni["spread_mean"], uni["t"], 0.5)
    windows = []
    for key in sorted(k for k in info if k.startswith("mixflow-g")):
        wlo, whi = _span_from(info[key]["spread_mean"], info[key]["t"], 0.5)
        windows.append(f"γ = {key.split('-g')[-1]} {wlo:.0f}–{whi:.0f}%")
    return [
        f"Noise-level information (exact posterior of the input's time on the training data, its spread as a share "
        f"of the prior's, mean over {info['samples']} inputs, t ≥ 0.5): over [0, 1] {lo:.0f}–{hi:.0f}%; for "
        f"MixFlow's slowed input within its window [(1 − γ) t, t] " + ", ".join(windows) + "."
    ]


def summary_metrics(per_step: dict[str, dict[str, dict[str, float]]], steps: list[int]) -> dict[str, float]:
    """A method's summary (``{steps: {metric: {mean, std}}}``) as a result record's flat metrics:
    ``metric@steps`` (the mean over seeds) and ``metric@steps_std``."""
    metrics: dict[str, float] = {}
    for n in steps:
        for key, v in per_step[str(n)].items():
            metrics[f"{key}@{n}"] = v["mean"]
            metrics[f"{key}@{n}_std"] = v["std"]
    return metrics


EXPLANATION = (
    "What the mechanism implies (exact, not measured): the MixFlow loss at network time t regresses x1 − x0 from "
    "inputs x_m with m ~ U[(1 − γ) t, t], so its exact minimiser is the true velocity averaged over the slowed "
    "times, weighted by the marginal density p_m(x): a field that is itself slowed (the 'exact MixFlow-optimal' "
    "rows). A network reaches that optimum only where its input cannot tell the slowed time m from the time t it "
    "is told; the noise-level sentences above measure how much the input reveals, and the distance sentences how "
    "far the trained models are from the optima. MixFlow also changes the time law (Beta(2,1) instead of uniform): "
    "its gain over fm-beta, which keeps that time law without slowing, is the slowing's alone."
)


def shapes_sentences(result: dict[str, Any]) -> list[str]:
    """Facts about the GPU shapes study run."""
    cfg = result["config"]
    seeds = result.get("seeds") or [cfg["seed"]]
    controls = ", ".join(c for c in ("fm-control", "fm-beta") if c in result.get("fid", {})) or "FM control"
    out = [
        f"Run on {result['device']} (torch {result['torch']}): {cfg['model']} "
        f"({result['num_params'] / 1e6:.1f}M parameters), base {result['base_steps']} steps, then "
        f"{result['post_steps']} steps of each post-training ({controls}; MixFlow γ = "
        f"{', '.join(str(g) for g in cfg['gammas'])}), batch {cfg['batch_size']}, {len(seeds)} seed"
        f"{'s' if len(seeds) != 1 else ''}; {result['wall_s']:.0f} s wall on the GPU. {result['protocol']}."
    ]
    fid = result.get("fid", {})
    if fid:
        floor = result.get("fid_floor")
        control = fid.get("fm-control", {})

        def spans(d: dict[str, float], ref: dict[str, float]) -> str:
            """``ode-10..50 +2.2 to +5.9; sde-250 -7.1``: differences grouped by sampler."""
            groups: dict[str, list[tuple[str, float]]] = {}
            for k in d:
                if k in ref:
                    groups.setdefault(k.split("-")[0], []).append((k.split("-")[1], d[k] - ref[k]))
            text = []
            for kind, rows in groups.items():
                lo, hi = min(v for _, v in rows), max(v for _, v in rows)
                span = f"{lo:+.2f}" if len(rows) == 1 else f"{lo:+.2f} to {hi:+.2f}"
                text.append(f"{kind} NFE {', '.join(n for n, _ in rows)}: {span}")
            return "; ".join(text)

        paired = result.get("fid_paired") or {}
        for name, d in fid.items():
            if name.startswith("mixflow") and paired.get(name):
                for ctl, cells in paired[name].items():
                    out.append(f"{name} − {ctl} FID, mean over seeds [95% t interval]: {_paired_cells(cells)}.")
            elif name.startswith("mixflow") and control:
                out.append(f"{name} − FM control FID: {spans(d, control)}.")
        baseline = fid.get("baseline", {})
        if control and baseline:
            out.append(f"FM control − baseline FID (the extra steps alone): {spans(control, baseline)}.")
        columns = sorted({k for d in fid.values() for k in d}, key=lambda k: (k.split("-")[0], int(k.split("-")[1])))
        best_of = [f"{k} {min(fid, key=lambda n: fid[n].get(k, float('inf')))}" for k in columns]
        out.append(f"Best FID per sampler: {'; '.join(best_of)}.")
        if floor is not None:
            worst = max(v for d in fid.values() for v in d.values())
            best = min(v for d in fid.values() for v in d.values())
            out.append(
                f"Every model's FID lies between {best:.1f} and {worst:.1f}, against a floor of {floor:.2f} "
                f"({cfg['num_eval']} real images vs the reference set)."
            )
    slow = result.get("slow_flow") or {}
    if slow.get("null") and slow.get("models"):
        t = slow["null"]["t"]
        i = min(range(len(t)), key=lambda j: abs(t[j] - 0.9))
        means = ", ".join(f"{name} {m['mean'][i]:.3f}" for name, m in slow["models"].items())
        out.append(
            f"Slow-Flow, mean nearest ground-truth time at t = {t[i]:.1f} ({slow['null']['num']} samples, "
            f"{slow['steps']} Euler steps): null {slow['null']['mean'][i]:.3f}; {means}."
        )
    precision = result.get("precision") or {}
    for name, row in precision.get("models", {}).items():
        cells = [
            f"{path} FID {c['fid_minus_exact']:+.3f} vs exact, final-state relative L2 {c['final_rel_l2']:.2e}"
            for path, c in row.items()
            if "fid_minus_exact" in c
        ]
        if cells:
            out.append(f"Sampling paths, {name}, Euler NFE {precision['nfe']} from the same noise: {'; '.join(cells)}.")
    if result.get("skipped_for_time"):
        out.append(f"Skipped at the run's deadline: {', '.join(result['skipped_for_time'])}.")
    return out


def _paired_cells(cells: dict[str, dict]) -> str:
    """``ode-10 +1.20 [-0.30, +2.70] (3 seeds); ...``: one sampler per cell, the interval when there is one."""
    parts = []
    for col, c in cells.items():
        ci = f" [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]" if c.get("ci95") else ""
        parts.append(f"{col} {c['mean']:+.2f}{ci} ({c['n']} seed{'s' if c['n'] != 1 else ''})")
    return "; ".join(parts)


def study_report_markdown(results_root: Path) -> str:
    """The write-up section of ``results/README.md`` (empty when no study outputs exist)."""
    results_root = Path(results_root)
    parts: list[str] = []
    for path in sorted((results_root / "studies").glob("*/study.json")):
        r = json.loads(path.read_text())
        rel = path.parent.relative_to(results_root)
        parts += [f"### {r['recipe']}", ""]
        parts += [
            f"Euler sampling from the same noise for every model, {r['num_eval_samples']} samples, "
            f"{len(r['seeds'])} seeds (mean ± std); baseline {r['baseline_steps']} FM steps, then "
            f"{r['posttrain_steps']} steps of each post-training; exact fields integrated with the same sampler. "
            "Lower is better.",
            "",
        ]
        for key in r["summary"][r["methods"][0]][str(r["eval_steps"][0])]:
            parts += _table(r, key) + [""]
        parts += [f"![FD vs steps]({rel}/fd_vs_steps.png) ![Slow Flow]({rel}/slow_flow.png)", ""]
        parts += [f"* {s}" for s in study_sentences(r)] + [""]
    if parts:
        parts = ["## Where does MixFlow help? Small CPU studies", "", *parts, EXPLANATION, ""]
    shapes = latest_shapes_run(results_root)
    if shapes is not None:
        r = json.loads(shapes.read_text())
        parts += ["## GPU study: SiT-S/4 on procedural 32×32 shapes", ""]
        parts += [f"* {s}" for s in shapes_sentences(r)] + [""]
        parts += [f"From `{shapes.relative_to(results_root.parent).as_posix()}`, the newest run; see "
                  "`results/shapes-sit-s/README.md` for what each run can and cannot say.", ""]
    return "\n".join(parts)


def latest_shapes_run(results_root: Path) -> Path | None:
    """The newest committed GPU shapes run: ``shapes-sit-s/run<N>/shapes_study.json`` with the largest N, else
    the older runs' file at ``shapes-sit-s/shapes_study.json`` (None when neither exists)."""
    folder = Path(results_root) / "shapes-sit-s"
    numbered = [p for p in folder.glob("run*/shapes_study.json") if p.parent.name[3:].isdigit()]
    if numbered:
        return max(numbered, key=lambda p: int(p.parent.name[3:]))
    top = folder / "shapes_study.json"
    return top if top.exists() else None
