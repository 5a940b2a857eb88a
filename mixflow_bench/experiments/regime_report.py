"""The regime study's prose summary, generated from its ``regime.json`` (every number and comparison comes from
the ``gains`` entries; ``tests/test_regime_study.py`` checks each sentence against them)."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path
from typing import Any


def _regime_key(g: dict[str, Any]) -> tuple[int, int, int, float]:
    return (g["width"], g["base_steps"], g["posttrain_steps"], g["gamma"])


def _regimes(cells: list[dict[str, Any]]) -> list[str]:
    """``width 256, 250+250 steps, γ = 0.2: NFE 4, 8 (gain 0.17–0.29)`` for each (width, length, gamma)."""
    out = []
    for (width, base, post, gamma), group in groupby(sorted(cells, key=_regime_key), key=_regime_key):
        rows = sorted(group, key=lambda g: g["nfe"])
        lo, hi = min(g["gain_mean"] for g in rows), max(g["gain_mean"] for g in rows)
        span = f"{lo:.3f}" if len(rows) == 1 else f"{lo:.3f}–{hi:.3f}"
        out.append(
            f"width {width}, {base}+{post} steps, γ = {gamma:g}: NFE "
            f"{', '.join(str(g['nfe']) for g in rows)} (FD gain {span})"
        )
    return out


def beats(gains: list[dict[str, Any]], control: str) -> list[dict[str, Any]]:
    """The cells where MixFlow beats ``control`` beyond the seed spread."""
    return [g for g in gains if g["control"] == control and g["beyond_spread"]]


def regime_sentences(result: dict[str, Any]) -> list[str]:
    gains = result["gains"]
    n_cells = sum(1 for g in gains if g["control"] == "fm-beta")
    widths = ", ".join(str(w) for w in result["widths"])
    lengths = ", ".join(f"{b}+{p}" for b, p in result["lengths"])
    out = [
        f"Grid: MLP widths {widths} (depth {result['depth']}), training lengths {lengths} steps (base + "
        f"post-training), γ = {', '.join(f'{g:g}' for g in result['gammas'])}, Euler NFE "
        f"{', '.join(str(n) for n in result['eval_steps'])}; {len(result['seeds'])} seeds with paired noise; "
        f"{n_cells} cells per control."
    ]
    win = beats(gains, "fm-beta")
    if win:
        out.append(
            f"MixFlow beats the time-law control fm-beta beyond the seed spread (every seed's gain positive, mean "
            f"above two standard errors) in {len(win)} of {n_cells} cells: " + "; ".join(_regimes(win)) + "."
        )
    else:
        out.append(
            f"No cell was found where MixFlow beats the time-law control fm-beta beyond the seed spread "
            f"(every seed's gain positive, mean above two standard errors); {n_cells} cells tried."
        )
    lose = [g for g in gains if g["control"] == "fm-beta" and g["gain_max"] < 0]
    out.append(f"MixFlow loses to fm-beta on every seed in {len(lose)} of {n_cells} cells.")
    win_u = beats(gains, "fm-control")
    out.append(
        f"Against the uniform-time control fm-control, MixFlow wins beyond the seed spread in {len(win_u)} of "
        f"{n_cells} cells (against fm-beta: {len(win)})."
    )
    groups = {}
    for g in gains:
        if g["control"] == "fm-beta":
            groups[_regime_key(g)] = g["lag_mixflow"] < g["lag_control"]
    reduced = sum(groups.values())
    out.append(
        f"Measured lag at t = {result['lag']['t']:.3f} (the null's median nearest ground-truth time minus the "
        f"model's; positive: slowed): MixFlow's mean lag is below fm-beta's in {reduced} of {len(groups)} "
        f"(width, length, γ) settings."
    )
    secs = result["seconds"]
    out.append(f"Run time: {secs['total_wall']:.0f} s wall, {secs['total_cpu']:.0f} s CPU.")
    return out


def regime_summary(result: dict[str, Any]) -> str:
    """Markdown: the sentences as a list."""
    return "\n".join(f"* {s}" for s in regime_sentences(result))


def regime_report_markdown(results_root: Path) -> str:
    """The regime sections of ``results/README.md``: each committed ``regime/<recipe>/regime.json``'s sentences
    and plot (empty when none is committed)."""
    parts: list[str] = []
    for path in sorted((Path(results_root) / "regime").glob("*/regime.json")):
        r = json.loads(path.read_text())
        rel = path.parent.relative_to(results_root)
        parts += [f"## Regime study: {r['recipe']}", ""]
        parts += [
            "Where MixFlow beats flow matching with its own time law (fm-beta: Beta(2,1) times, no slowing) on "
            "digits, over model capacity, training length, γ and NFE (generated from `regime.json`):",
            "",
        ]
        parts += [f"* {s}" for s in regime_sentences(r)] + ["", f"![regime]({rel}/regime.png)", ""]
    return "\n".join(parts)
