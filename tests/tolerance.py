"""Float comparisons whose tolerance states what it bounds: rounding error relative to the values' magnitude.

An absolute tolerance such as ``atol=1e-12`` holds only where the values happen to be near 1 and the sums run in the
order of the machine that chose it; another thread count (``OMP_NUM_THREADS``) or CPU kind reorders the sums and moves
the last bits. ``assert_close_to_scale`` bounds ``|actual - expected|`` by ``ulps`` machine epsilons of the dtype at
the largest ``|expected|``, so the same bound holds at any magnitude and on any machine.
"""

from __future__ import annotations

import torch


def scale_tolerance(expected: torch.Tensor, ulps: float) -> float:
    """``ulps`` machine epsilons of ``expected``'s dtype at its largest magnitude (the bound used below)."""
    eps = torch.finfo(expected.dtype).eps
    return ulps * eps * max(float(expected.detach().abs().max()), torch.finfo(expected.dtype).tiny)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, ulps: float, msg: str | None = None) -> None:
    """Assert every ``|actual - expected| <= ulps * eps(dtype) * max|expected|`` (rounding, reordered sums)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    torch.testing.assert_close(actual, expected, rtol=0, atol=scale_tolerance(expected, ulps), msg=msg)
