"""κ-FC mixed source: flow matching from a mixture of N(0, I) and a learned source conditioned on a signal κ.

This is the method of Nayal, Wewer and Lenssen, "MixFlow: Mixed Source Distributions Improve Rectified Flows"
(arXiv 2604.09181). Inside this project it is called *mixed source* to keep it apart from the slowed-interpolation
post-training that the rest of the suite calls MixFlow.

Time convention: ``DATA_AT_1`` (t = 0 is the source, t = 1 is data), ``x_t = t x1 + (1 - t) x0`` and the target
velocity is ``x1 - x0``. One training step, as the released training step runs it::

    mu, log_var = source(kappa)                          # kappa = x1 (image), the label (class) or noise
    w ~ U(0, 1) per sample                               # w = 1: Fast-ODE; w = 0: rectified flow
    x0 = w mu + sqrt(w sigma^2 + (1 - w)) eps            # "parameters": interpolate the Gaussians' parameters
    t ~ U(0, 1);  x_t = t x1 + (1 - t) x0
    loss = |v(x_t, t) - (x1 - x0)|^2 (mean over elements) + beta KL(N(mu, sigma^2) || N(0, I)) (sum over elements)

The draw of x0 is reparameterised, so the flow loss also trains the source network. The KL is that of the
*un-interpolated* source. The paper's text also describes a mixture of random variables,
``x0 = w z + (1 - w) eps'`` with ``z ~ N(mu, sigma^2)`` (``mixture="random-variable"``), whose variance is
``w^2 sigma^2 + (1 - w)^2`` instead. Sampling always starts from N(0, I) (the w = 0 end), so no κ is needed then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mixflow_bench.errors import UserError
from mixflow_bench.flow.conventions import TimeConvention

CONVENTION = TimeConvention.DATA_AT_1
Kappa = Literal["image", "class", "noise"]
KAPPAS: tuple[str, ...] = ("image", "class", "noise")
Weighting = Literal["uniform", "one", "zero"]
WEIGHTINGS: tuple[str, ...] = ("uniform", "one", "zero")
SourceMixture = Literal["parameters", "random-variable"]
SOURCE_MIXTURES: tuple[str, ...] = ("parameters", "random-variable")


class MixedSourceError(UserError, ValueError):
    """A setting of the mixed-source method that cannot be used (one line, no traceback at the CLI)."""


def check_kappa(kappa: str) -> str:
    if kappa not in KAPPAS:
        raise MixedSourceError(f"unknown source signal kappa {kappa!r} (expected one of: {', '.join(KAPPAS)})")
    return kappa


def check_beta(beta: float) -> float:
    if not beta >= 0.0:  # also rejects NaN
        raise MixedSourceError(f"the KL weight beta must be >= 0, got {beta}")
    return float(beta)


def _bcast(w: Tensor, x: Tensor) -> Tensor:
    return w.to(dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))


def kl_to_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """Per-sample ``KL(N(mean, exp(log_var)) || N(0, I)) = 1/2 sum (mean^2 + var - 1 - log_var)``, shape (B,)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).flatten(1).sum(1)


def mixture_moments(
    mean: Tensor, var: Tensor, w: Tensor, mixture: SourceMixture = "parameters"
) -> tuple[Tensor, Tensor]:
    """Mean and variance of the mixed source for weights ``w`` (B,): the closed form of both variants."""
    wb = _bcast(w, mean)
    if mixture == "parameters":
        return wb * mean, wb * var + (1.0 - wb)
    if mixture == "random-variable":
        return wb * mean, wb.pow(2) * var + (1.0 - wb).pow(2)
    raise MixedSourceError(f"unknown source mixture {mixture!r} (expected one of: {', '.join(SOURCE_MIXTURES)})")


def mixed_source_sample(
    mean: Tensor,
    log_var: Tensor,
    w: Tensor,
    eps: Tensor,
    eps_source: Tensor | None = None,
    mixture: SourceMixture = "parameters",
) -> Tensor:
    """Reparameterised draw of x0 (t = 0 end) from the mixed source.

    ``parameters``: ``w mu + sqrt(w sigma^2 + (1 - w)) eps`` (one Gaussian draw ``eps``).
    ``random-variable``: ``w (mu + sigma eps_source) + (1 - w) eps`` (two independent draws).
    """
    wb = _bcast(w, mean)
    if mixture == "parameters":
        m, v = mixture_moments(mean, log_var.exp(), w, "parameters")
        return m + v.sqrt() * eps
    if mixture == "random-variable":
        if eps_source is None:
            raise MixedSourceError("the random-variable mixture needs a second Gaussian draw (eps_source)")
        z = mean + (0.5 * log_var).exp() * eps_source
        return wb * z + (1.0 - wb) * eps
    raise MixedSourceError(f"unknown source mixture {mixture!r} (expected one of: {', '.join(SOURCE_MIXTURES)})")


class MixedSourceModel(nn.Module):
    """A velocity network and a source network trained together; ``forward`` is the velocity (DATA_AT_1).

    ``velocity(x, t, y) -> dx/dt`` and ``source(x1, y, noise) -> (mean, log_var)``. Samplers, EMA and checkpoints
    treat the pair as one module; sampling only calls the velocity.
    """

    def __init__(self, velocity: nn.Module, source: nn.Module | None):
        super().__init__()
        self.velocity = velocity
        self.source = source
        self.convention = CONVENTION

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.velocity(x, t, y)


@dataclass
class MixedSourceFlow:
    """The mixed-source objective; Fast-ODE (``weighting="one"``) and rectified flow (``"zero"``) are settings of it.

    ``weighting``: ``uniform`` draws w ~ U(0, 1) per sample (the released configuration), ``one`` fixes w = 1 (the
    pure κ-FC source, Fast-ODE's learned forward coupling), ``zero`` fixes w = 0 (rectified flow: plain N(0, I),
    no source network, no KL). ``beta`` weights the KL, summed over the sample's elements, against the flow
    loss, averaged over them (as the released code). Times are ``DATA_AT_1``.
    """

    beta: float = 1e-5
    weighting: Weighting = "uniform"
    mixture: SourceMixture = "parameters"
    kappa: Kappa = "image"
    t_eps: float | None = None  # official ``t_eps``: t = u (1 - t_eps) + t_eps (None: plain U(0, 1))

    def __post_init__(self) -> None:
        check_beta(self.beta)
        check_kappa(self.kappa)
        if self.weighting not in WEIGHTINGS:
            raise MixedSourceError(f"unknown weighting {self.weighting!r} (expected one of: {', '.join(WEIGHTINGS)})")
        if self.mixture not in SOURCE_MIXTURES:
            raise MixedSourceError(
                f"unknown source mixture {self.mixture!r} (expected one of: {', '.join(SOURCE_MIXTURES)})"
            )

    @property
    def uses_source(self) -> bool:
        return self.weighting != "zero"

    def draw(self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
        """Every random number of one step for ``batch_size`` samples (first dim = batch, on the generator's device)."""
        shape = (batch_size, *sample_shape)
        return {
            "noise": torch.randn(shape, generator=generator, device=generator.device),
            "noise_source": torch.randn(shape, generator=generator, device=generator.device),
            "noise_kappa": torch.randn(shape, generator=generator, device=generator.device),
            "u_time": torch.rand(batch_size, generator=generator, device=generator.device),
            "u_w": torch.rand(batch_size, generator=generator, device=generator.device),
        }

    def weights(self, randomness: dict[str, Tensor]) -> Tensor:
        """The mixture weight w per sample (1 = the learned source, 0 = N(0, I))."""
        u = randomness["u_w"]
        if self.weighting == "uniform":
            return u
        return torch.ones_like(u) if self.weighting == "one" else torch.zeros_like(u)

    def times(self, randomness: dict[str, Tensor]) -> Tensor:
        """Training times t (DATA_AT_1: t = 1 is data)."""
        t = randomness["u_time"]
        return t if self.t_eps is None else t * (1.0 - self.t_eps) + self.t_eps

    def source_and_kl(
        self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """(x0 at t = 0, per-sample KL of the un-interpolated source; zeros for rectified flow)."""
        eps = randomness["noise"].to(device=x1.device, dtype=x1.dtype)
        if not self.uses_source:
            return eps, torch.zeros(x1.shape[0], device=x1.device)
        source = getattr(model, "source", None)
        if source is None:
            raise MixedSourceError(f"weighting {self.weighting!r} needs a model with a source network")
        kappa_noise = randomness["noise_kappa"].to(device=x1.device, dtype=x1.dtype)
        mean, log_var = source(x1, y, kappa_noise)
        w = self.weights(randomness).to(x1.device)
        eps_source = randomness["noise_source"].to(device=x1.device, dtype=x1.dtype)
        x0 = mixed_source_sample(mean, log_var, w, eps, eps_source, self.mixture)
        return x0, kl_to_standard_normal(mean.float(), log_var.float())

    def loss(self, model: nn.Module, x1: Tensor, y: Tensor, randomness: dict[str, Tensor]) -> Tensor:
        """Per-sample loss (B,): flow MSE averaged over elements + beta * KL summed over elements."""
        x0, kl = self.source_and_kl(model, x1, y, randomness)
        t = self.times(randomness).to(device=x1.device, dtype=x1.dtype)
        tb = _bcast(t, x1)
        x_t = tb * x1 + (1.0 - tb) * x0
        velocity = getattr(model, "velocity", model)
        pred = velocity(x_t, t, y)
        mse = (pred.float() - (x1 - x0).float()).pow(2).flatten(1).mean(1)
        return mse + self.beta * kl if self.uses_source else mse


# --- methods by name ---------------------------------------------------------------------------------------
METHODS: dict[str, dict] = {
    "rectified-flow": {"weighting": "zero"},
    "fast-ode": {"weighting": "one"},
    "mixed-source": {"weighting": "uniform", "mixture": "parameters"},
    "mixed-source-rv": {"weighting": "uniform", "mixture": "random-variable"},
}
METHOD_LABELS: dict[str, str] = {
    "rectified-flow": "rectified flow (w = 0)",
    "fast-ode": "Fast-ODE / pure κ-FC (w = 1)",
    "mixed-source": "κ-FC mixed source (w ~ U(0,1), parameter mixture)",
    "mixed-source-rv": "κ-FC mixed source, random-variable mixture",
}


def mixed_source_method(name: str, beta: float = 1e-5, kappa: str = "image", **kwargs) -> MixedSourceFlow:
    """The objective registered as ``name`` (rectified-flow, fast-ode, mixed-source, mixed-source-rv)."""
    if name not in METHODS:
        raise MixedSourceError(f"unknown method {name!r} (expected one of: {', '.join(METHODS)})")
    return MixedSourceFlow(beta=beta, kappa=kappa, **METHODS[name], **kwargs)
