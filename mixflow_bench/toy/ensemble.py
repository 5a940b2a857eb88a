"""Many small velocity MLPs trained as one batched ensemble (``torch.func.stack_module_state`` + ``vmap``).

Each member has its own weights, EMA, Adam moments, gradient clipping and objective; members that share a seed
share the data order and every random draw (noise, times, slowing), so methods are compared on paired noise.
One step of the ensemble is one batched forward/backward, which is what makes the three-seed study fast on a
CPU. Times are data-ward (t = 1 is data); the path is linear, so the regression target is ``x1 - x0`` at any time.

Objectives, per member: flow matching (``tau ~ U[0, 1]``, input at ``tau``) or MixFlow (``tau ~ Beta(2, 1)``,
input at the slowed ``m = tau (1 - gamma u)``, network told ``tau``): the time draws, slowing and path of
:mod:`mixflow_bench.flow.objectives` with a per-member gamma and time law (test_toy_study.py checks each member's
loss against :class:`~mixflow_bench.flow.objectives.FlowMatching`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mixflow_bench.flow.objectives import data_ward_time, slowed_time
from mixflow_bench.flow.paths import Path

PATH = Path("linear")  # data-ward time (DATA_AT_1), the regression target x1 - x0 at any time


@dataclass(frozen=True)
class Member:
    """One model of the ensemble: its seed (for pairing), method name and objective."""

    seed: int
    method: str
    gamma: float = 0.0  # 0: flow matching
    beta_times: bool = False  # MixFlow draws tau ~ Beta(2, 1)


class Ensemble:
    """Stacked weights of models built like ``template``; ``__call__(x, t, y)`` takes (E, B, ...) inputs."""

    def __init__(self, template: nn.Module, states: list[dict[str, Tensor]]):
        models = []
        for state in states:
            m = copy.deepcopy(template)
            m.load_state_dict(state)
            models.append(m)
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(template).to("meta")
        self.size = len(states)

    def _one(self, params: dict, buffers: dict, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x, t, y))

    def __call__(self, x: Tensor, t: Tensor, y: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        return vmap(self._one)(self.params if params is None else params, self.buffers, x, t, y)

    def member_state(self, params: dict[str, Tensor], index: int) -> dict[str, Tensor]:
        """The state dict of member ``index`` from stacked ``params`` (e.g. the EMA)."""
        return {k: v[index].detach().clone() for k, v in params.items()}


def member_losses(
    ensemble: Ensemble, x1: Tensor, y: Tensor, noise: Tensor, u_time: Tensor, u_mix: Tensor, gamma: Tensor,
    beta_times: Tensor, params: dict[str, Tensor] | None = None,
) -> Tensor:
    """Per-member, per-sample losses (E, B) of flow matching / MixFlow for stacked data ``x1`` (E, B, ...).

    ``u_time``, ``u_mix``: (E, B) uniforms of the time and the slowing; ``gamma`` (E,) (0: flow matching) and
    ``beta_times`` (E,) (Beta(2, 1) times) are each member's objective.
    """
    # data-ward time the network is told, and the slowed input time (= tau for flow matching)
    tau = torch.where(beta_times[:, None], data_ward_time(u_time, "beta21"), data_ward_time(u_time, "uniform"))
    m = slowed_time(tau, u_mix, "slowed", gamma[:, None])
    mb = m.reshape(*m.shape, *([1] * (x1.ndim - 2)))
    pred = ensemble(PATH.interpolate(x1, noise, mb), tau, y, params=params)
    return (pred - PATH.velocity(x1, noise, mb)).pow(2).flatten(2).mean(2)


@dataclass
class EnsembleResult:
    ema: dict[str, Tensor]  # stacked EMA weights
    weights: dict[str, Tensor]  # stacked raw weights
    seconds: float
    # step -> (EMA, raw weights) after that many steps, for each step of ``snapshots`` (a shorter run's result)
    snapshots: dict[int, tuple[dict[str, Tensor], dict[str, Tensor]]] = field(default_factory=dict)


def train_ensemble(
    ensemble: Ensemble,
    members: list[Member],
    x_train: Tensor,
    y_train: Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    grad_clip: float | None,
    ema_init: dict[str, Tensor] | None = None,
    stage_seed: int = 0,
    advance: Callable[[int], None] | None = None,
    snapshots: tuple[int, ...] = (),
) -> EnsembleResult:
    """AdamW (no weight decay, constant ``lr``), per-member gradient clipping, EMA; paired draws within a seed.

    ``advance(1)`` is called after every step (progress). ``snapshots``: step counts after which the EMA and
    weights are kept as well (equal to what a run of that many steps returns: nothing in a step depends on the
    total)."""
    import time

    if len(members) != ensemble.size:
        raise ValueError(f"{len(members)} members for an ensemble of {ensemble.size}")
    seeds = sorted({m.seed for m in members})
    slot = torch.tensor([seeds.index(m.seed) for m in members])
    gamma = torch.tensor([m.gamma for m in members], dtype=torch.float32)
    beta = torch.tensor([m.beta_times for m in members])
    gens = [torch.Generator().manual_seed(1_000_003 * stage_seed + s) for s in seeds]
    params = list(ensemble.params.values())
    # the fused kernel: one pass over each tensor (7% of a digits post-training step on 2 CPU cores)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    ema = {k: (ema_init[k] if ema_init is not None else v).detach().clone() for k, v in ensemble.params.items()}
    shape = tuple(x_train.shape[1:])
    started = time.perf_counter()
    kept: dict[int, tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
    for step in range(steps):
        idx, noise, u_time, u_mix = [], [], [], []
        for g in gens:  # one set of draws per seed, shared by that seed's methods
            idx.append(torch.randint(len(x_train), (batch_size,), generator=g))
            noise.append(torch.randn((batch_size, *shape), generator=g))
            u_time.append(torch.rand(batch_size, generator=g))
            u_mix.append(torch.rand(batch_size, generator=g))
        idx_s, noise_s = torch.stack(idx)[slot], torch.stack(noise)[slot]  # (E, B), (E, B, *shape)
        u_t, u_m = torch.stack(u_time)[slot], torch.stack(u_mix)[slot]
        losses = member_losses(ensemble, x_train[idx_s], y_train[idx_s], noise_s, u_t, u_m, gamma, beta)
        loss = losses.mean(1)  # (E,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        if grad_clip:
            norms = torch.sqrt(sum(p.grad.pow(2).flatten(1).sum(1) for p in params))  # (E,)
            scale = (grad_clip / (norms + 1e-6)).clamp(max=1.0)
            for p in params:
                p.grad.mul_(scale.view(-1, *([1] * (p.grad.ndim - 1))))
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.values()), params, 1.0 - ema_decay)
        if advance is not None:
            advance(1)
        if step + 1 in snapshots:
            kept[step + 1] = (
                {k: v.detach().clone() for k, v in ema.items()},
                {k: v.detach().clone() for k, v in ensemble.params.items()},
            )
    return EnsembleResult(
        ema=ema,
        weights={k: v.detach().clone() for k, v in ensemble.params.items()},
        seconds=time.perf_counter() - started,
        snapshots=kept,
    )


@torch.no_grad()
def ensemble_velocity(ensemble: Ensemble, params: dict[str, Tensor], y: Tensor):
    """``(x (E, B, ...), t (B,)) -> dx/dt (E, B, ...)`` with fixed labels ``y`` (E, B)."""

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tt = torch.full(x.shape[:2], float(t.reshape(-1)[0]))  # one time for every member and sample
        return ensemble(x.float(), tt, y[:, : x.shape[1]], params=params).to(x.dtype)

    return velocity
