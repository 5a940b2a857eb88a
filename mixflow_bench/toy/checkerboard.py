"""GMFlow's 2-D checkerboard and the numbers that stand in for its pictures.

The data are the 8 "white" squares ``(i + j)`` even of a 4 x 4 grid on ``[-scale, scale]^2`` (scale 4),
uniform inside each square. The paper only shows histograms; the metrics here turn them into numbers:

* ``in_support``: the share of samples inside the 8 squares (1 for the data);
* ``chi2``: ``sum_s (p_s - 1/8)^2 / (1/8)`` over the 8 squares' shares of the in-support samples (0 = uniform);
* ``centre_edge``: mass per square of the 2 central squares over mass per square of the 6 outer ones
  (1 = uniform; > 1 centre-heavy, < 1 edge-heavy);
* ``energy``: the energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` to fresh data samples (0 = same law).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mixflow_bench.atomic import atomic_path

N_RC = 4
SCALE = 4.0
WHITE = [(i, j) for i in range(N_RC) for j in range(N_RC) if (i + j) % 2 == 0]
CENTRE = [(1, 1), (2, 2)]


def sample_checkerboard(n: int, generator: torch.Generator, scale: float = SCALE) -> Tensor:
    """``n`` points (n, 2), float32, uniform on the 8 white squares of the 4 x 4 board on ``[-scale, scale]^2``."""
    squares = torch.tensor(WHITE, dtype=torch.float32)
    idx = torch.randint(len(WHITE), (n,), generator=generator)
    inside = torch.rand(n, 2, generator=generator)
    return ((squares[idx] + inside) * (2.0 / N_RC) - 1.0) * scale


def square_index(x: Tensor, scale: float = SCALE) -> tuple[Tensor, Tensor, Tensor]:
    """Grid cell (i, j) of each point and whether it lies on the board."""
    cell = torch.floor((x.double() / scale + 1.0) * (N_RC / 2.0)).long()
    on_board = ((cell >= 0) & (cell < N_RC)).all(dim=1)
    return cell[:, 0], cell[:, 1], on_board


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Energy distance between two point sets (float64 pairwise Euclidean distances)."""
    a, b = a.double(), b.double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def checkerboard_metrics(samples: Tensor, reference: Tensor, energy_points: int = 2000) -> dict[str, float]:
    """The four numbers of the module doc for samples (N, 2); ``reference`` are fresh data samples."""
    x = samples.reshape(len(samples), 2)
    if not torch.isfinite(x).all():
        raise FloatingPointError("samples contain NaN or inf")
    i, j, on_board = square_index(x)
    white = on_board & ((i + j) % 2 == 0)
    n_in = int(white.sum())
    counts = np.array([int((white & (i == a) & (j == b)).sum()) for a, b in WHITE], dtype=np.float64)
    shares = counts / max(n_in, 1)
    centre = sum(counts[WHITE.index(c)] for c in CENTRE) / len(CENTRE)
    edge = (counts.sum() - centre * len(CENTRE)) / (len(WHITE) - len(CENTRE))
    m = min(energy_points, len(x), len(reference))
    return {
        "in_support": n_in / len(x),
        "chi2": float(((shares - 1 / 8) ** 2 / (1 / 8)).sum()),
        "centre_edge": float(centre / edge) if edge > 0 else float("inf"),
        "energy": energy_distance(x[:m], reference[:m]),
    }


def histogram_grid(
    panels: dict[str, dict[str, np.ndarray]], path: Path, title: str, bins: int = 200, lim: float = 4.2
) -> None:
    """A PNG of 2-D histograms: rows = methods, columns = NFE (the paper's 200^2 bins on [-4.2, 4.2]^2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(panels)
    cols = list(next(iter(panels.values())))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.6 * len(cols), 1.6 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for c, key in enumerate(cols):
            ax = axes[r][c]
            pts = panels[name][key]
            hist, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]])
            density = hist.T[::-1] / max(hist.mean() * 2.8, 1e-12)  # the data: ~0.8 on the squares
            ax.imshow(np.clip(density, 0, 1), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(key, fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
