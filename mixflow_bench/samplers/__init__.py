"""The sampler registry: every sampler a recipe, ``sample --sampler`` or a result protocol can name, in one place.

A sampler is a plain function that runs from start noise to latents at the data end of the model's convention.
Velocity samplers are ``run(spec, velocity, noise, sample_cfg, step_noise) -> latents`` (``velocity(x, t)``
in the model's own time convention, guidance already applied); Gaussian-mixture samplers (GMFlow) take the model,
since guidance acts on the mixtures: ``run(spec, model, y, noise, sample_cfg, step_noise) -> latents``.

Each entry also says how many network evaluations (NFE) one image costs for a number of steps and a model family
(guidance not counted: a guided evaluation batches its two halves in one call), and which model outputs, time
conventions and guidance kinds it accepts. The recipe schema, the CLI's ``--sampler`` choices, the result
protocols (``nfe``) and ``reproduce --plan`` all read this table. A new sampler is one function and one
:func:`register_sampler` call.

This module does not import torch (the recipe loader and the CLI's option lists read it): the built-in samplers
are named as ``"module:function"`` and imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mixflow_bench.registry import Registry

Output = Literal["velocity", "gm"]
VELOCITY_GUIDANCE = ("none", "cfg", "autoguidance")
GM_GUIDANCE = ("none", "probabilistic")
BOTH_CONVENTIONS = ("data_at_0", "data_at_1")  # TimeConvention values


@dataclass(frozen=True)
class Sampler:
    """One registered sampler.

    ``run`` is the function (or its ``"module:function"`` path). ``nfe(steps, family)`` is the network evaluations
    per image, None where the sampler is adaptive; ``assumed_nfe(steps)`` is what a cost plan assumes for an
    adaptive one. ``output`` is the model output it integrates, ``conventions`` the time conventions
    (:class:`~mixflow_bench.flow.conventions.TimeConvention` values) it runs in, ``guidance`` the guidance kinds.
    ``implementation`` names the ODE routine of an adaptive sampler (``torchdiffeq-dopri5``, ``scipy-rk45``): two
    routines of the same order control the step size differently, so results record which one ran.
    ``label`` is the short name tables and plots print (the name when empty); ``samples_mixture`` marks the GM-SDE
    samplers, which draw from the predicted Gaussian mixture at each step (a result records whether spectrally).
    """

    name: str
    run: Callable[..., Any] | str
    nfe: Callable[[int, str | None], int | None]
    description: str = ""
    output: Output = "velocity"
    conventions: tuple[str, ...] = BOTH_CONVENTIONS
    guidance: tuple[str, ...] = VELOCITY_GUIDANCE
    assumed_nfe: Callable[[int], int] | None = None
    implementation: str | None = None  # adaptive samplers: the library routine (a result protocol field)
    label: str = ""
    samples_mixture: bool = False

    @property
    def display(self) -> str:
        """The name tables and plots print."""
        return self.label or self.name

    def function(self) -> Callable[..., Any]:
        """The sampling function (imported on first use when given as a path)."""
        if callable(self.run):
            return self.run
        module, attr = self.run.split(":")
        return getattr(importlib.import_module(module), attr)

    def accepts(self, output: str, convention: str) -> bool:
        """Whether a model with this ``output`` kind and time ``convention`` can be sampled with it."""
        return output == self.output and convention in self.conventions


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register_sampler(sampler: Sampler) -> Sampler:
    """Add ``sampler`` to the registry (a name can be registered once)."""
    return SAMPLERS.register(sampler.name, sampler)


def unregister_sampler(name: str) -> None:
    """Remove a registered sampler (tests that register their own)."""
    SAMPLERS.unregister(name)


def sampler_names(output: str | None = None) -> tuple[str, ...]:
    """The registered sampler names (those integrating ``output`` when given), in registration order."""
    return tuple(name for name, s in SAMPLERS.items() if output is None or s.output == output)


def guidance_kinds() -> tuple[str, ...]:
    """Every guidance kind some registered sampler takes (``none`` first)."""
    kinds: dict[str, None] = {}
    for sampler in SAMPLERS.values():
        kinds.update(dict.fromkeys(sampler.guidance))
    return tuple(kinds)


def get_sampler(name: str) -> Sampler:
    """The sampler registered as ``name``; a ValueError naming the valid ones otherwise."""
    return SAMPLERS.lookup(name)


def compatibility_problem(name: str, spec: Any, guidance: str = "none") -> str | None:
    """Why model ``spec`` (a zoo ModelSpec: ``output``, ``convention``) cannot be sampled with sampler ``name`` under
    ``guidance``, in one line; None when it can."""
    sampler = SAMPLERS.get(name)
    if sampler is None:
        return f"unknown sampler {name!r} (expected one of: {', '.join(SAMPLERS)})"
    output = getattr(spec, "output", "velocity")
    convention = getattr(spec.convention, "value", spec.convention)
    if not sampler.accepts(output, convention):
        usable = [s.name for s in SAMPLERS.values() if s.accepts(output, convention)]
        return (f"sampler {name} cannot sample model {spec.name} (it outputs a {output} in {convention} time); "
                f"its samplers: {', '.join(usable)}")  # fmt: skip
    if guidance not in sampler.guidance:
        return f"sampler {name} takes guidance {' or '.join(sampler.guidance)}, not {guidance!r}"
    return None


def sampler_nfe(name: str, steps: int, family: str | None = None) -> int | None:
    """Network evaluations per image of sampler ``name`` with ``steps`` steps for a model of ``family``
    (guidance not counted); None for an adaptive sampler or a name that is not registered."""
    sampler = SAMPLERS.get(name)
    return None if sampler is None else sampler.nfe(steps, family)


def _steps(steps: int, family: str | None) -> int:
    return steps


def _heun_nfe(steps: int, family: str | None) -> int:
    # REPA's Heun ends on a plain Euler step (flow.samplers.heun with last_step_euler)
    return 2 * steps - 1 if family == "repa" else 2 * steps


def _adaptive(steps: int, family: str | None) -> None:
    return None


_RUN = "mixflow_bench.sampling.runners"
_GM = "mixflow_bench.sampling.gm:integrate_gm"
_BUILTIN = (
    Sampler("sde", f"{_RUN}:sde", _steps, "SiT's Euler-Maruyama SDE with a drift-only last step"),
    Sampler("euler", f"{_RUN}:euler", _steps, "explicit Euler on the uniform grid"),
    Sampler("heun", f"{_RUN}:heun", _heun_nfe, "the Heun of the model's family (REPA's ends on an Euler step)"),
    Sampler("dopri5", f"{_RUN}:dopri5", _adaptive, "adaptive Dormand-Prince 5(4), torchdiffeq defaults of SiT",
            assumed_nfe=lambda steps: 2 * steps, implementation="torchdiffeq-dopri5"),  # fmt: skip
    Sampler("rae-euler", f"{_RUN}:rae_euler", lambda steps, family: steps - 1,
            "Euler on RAE's shifted grid of `steps` points", conventions=("data_at_0",)),  # fmt: skip
    # the κ-FC mixed-source paper's solvers (its "5 NFE" is manual-heun with 3 steps; rk45 at 1e-5 tolerances)
    Sampler("manual-heun", f"{_RUN}:manual_heun", lambda steps, family: 2 * steps - 1,
            "Heun whose last step is Euler (2N - 1 NFE)", conventions=("data_at_1",)),  # fmt: skip
    Sampler("rk45", f"{_RUN}:rk45", _adaptive, "adaptive Dormand-Prince 5(4) at rtol = atol = 1e-5 (torchdiffeq)",
            assumed_nfe=lambda steps: 125, implementation="torchdiffeq-dopri5"),  # fmt: skip
    # the paper's measured CIFAR-10 RK45 row: scipy's RK45 (test.use_scipy=true), mean NFE 124.7
    Sampler("rk45-scipy", f"{_RUN}:rk45_scipy", _adaptive,
            "scipy's RK45 at rtol = atol = 1e-5, one step size for the whole batch (the κ-FC paper's RK45 row)",
            conventions=("data_at_1",), assumed_nfe=lambda steps: 125, implementation="scipy-rk45"),  # fmt: skip
    # GMFlow's solvers: the network outputs a Gaussian mixture (DATA_AT_0 time)
    *(
        Sampler(name, _GM, _steps, f"{label}, {order} order", output="gm", conventions=("data_at_0",),
                guidance=GM_GUIDANCE, label=label, samples_mixture=name.startswith("gm-sde"))
        for name, label, order in (("gm-sde", "GM-SDE", "1st"), ("gm-sde2", "GM-SDE 2", "2nd"),
                                   ("gm-ode", "GM-ODE", "1st"), ("gm-ode2", "GM-ODE 2", "2nd"))
    ),  # fmt: skip
)
for _sampler in _BUILTIN:
    register_sampler(_sampler)
