"""Trajectory curvature as the κ-FC mixed-source paper measures it.

For a trajectory ``x_0, ..., x_N`` of N Euler steps of size ``dt = 1 / N`` (DATA_AT_1 time, from the source at
t = 0 to data at t = 1; the paper uses N = 128 from x_0 ~ N(0, I)), the curvature of one trajectory is

    C = mean over k in [0, N) and over every element of ((x_N - x_0) - (x_{k+1} - x_k) / dt)^2

which is the discrete form of ``E int |(Z1 - Z0) - dZ_t/dt|^2 dt`` (Lee et al.), averaged over the elements
rather than summed. The paper reports the mean and standard deviation over trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FilePath

import numpy as np
import torch
from torch import Tensor

from mixflow_bench.atomic import atomic_path
from mixflow_bench.flow.counted_solvers import euler

CURVATURE_STEPS = 128


def trajectory_curvature(trajectory: Tensor | list[Tensor]) -> Tensor:
    """Per-trajectory curvature (B,) from states (N + 1, B, ...) on a uniform grid of step ``1 / N``."""
    traj = torch.stack(list(trajectory)) if isinstance(trajectory, list) else trajectory
    steps = traj.shape[0] - 1
    if steps < 1:
        raise ValueError("a trajectory needs at least two states")
    dt = 1.0 / steps
    v_ref = traj[-1] - traj[0]
    vs = (traj[1:] - traj[:-1]) / dt
    dims = (0, *range(2, traj.ndim))
    return ((v_ref.unsqueeze(0) - vs) ** 2).mean(dim=dims)


@torch.no_grad()
def curvature(
    velocity: Callable[[Tensor, Tensor], Tensor], x0: Tensor, steps: int = CURVATURE_STEPS, batch_size: int = 4096
) -> Tensor:
    """Curvatures (B,) of Euler trajectories from ``x0`` (t = 0) to t = 1 of a DATA_AT_1 velocity."""
    out = [trajectory_curvature(euler(velocity, chunk, steps).trajectory) for chunk in x0.split(batch_size)]
    return torch.cat(out)


def summarize(values: Tensor) -> dict[str, float]:
    """Mean and (population) standard deviation over trajectories, as the official evaluation writes them."""
    a = values.detach().double().cpu().numpy()
    return {"mean_curvature": float(np.mean(a)), "std_curvature": float(np.std(a)), "num_samples": int(a.size)}


def plot_curvature(
    values: dict[str, Tensor], path: FilePath, title: str, trajectories: dict[str, Tensor] | None = None
) -> FilePath:
    """Histogram of per-trajectory curvature per model; with 2-D ``trajectories`` (T, B, 2) also their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + (len(trajectories) if trajectories else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    positive = [v[v > 0] for v in values.values() if (v > 0).any()]
    low = min(float(v.min()) for v in positive) if positive else 1e-6
    high = max(float(v.max()) for v in values.values()) if values else 1.0
    bins = np.logspace(np.log10(max(low, 1e-8)), np.log10(max(high, low * 10)), 40)
    for label, v in values.items():
        ax.hist(v.clamp(min=bins[0]).cpu().numpy(), bins=bins, histtype="step", linewidth=1.5,
                label=f"{label} (mean {float(v.mean()):.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("trajectory curvature (Euler, per-element mean)")
    ax.set_ylabel("trajectories")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for ax, (label, traj) in zip(axes[0][1:], (trajectories or {}).items()):
        t = traj.cpu().numpy()
        for b in range(min(t.shape[1], 64)):
            ax.plot(t[:, b, 0], t[:, b, 1], lw=0.6, alpha=0.6)
        ax.scatter(t[-1, :, 0], t[-1, :, 1], s=3, c="k")
        ax.set_title(label, fontsize=9)
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return FilePath(path)
