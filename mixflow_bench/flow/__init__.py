"""The flow-matching core: time conventions, paths, objectives, samplers and guidance."""

from mixflow_bench.flow.conventions import (
    TimeConvention,
    convert_time,
    convert_velocity,
    rae_shift_factor,
    shift_noise_level,
)
from mixflow_bench.flow.guidance import autoguidance, classifier_free, conditional
from mixflow_bench.flow.objectives import FlowMatching, mixflow
from mixflow_bench.flow.paths import Path
from mixflow_bench.flow.samplers import (
    dopri5,
    euler,
    euler_maruyama,
    heun,
    rae_grid,
    repa_heun,
    sit_sde_grid,
    uniform_grid,
)

__all__ = [
    "FlowMatching",
    "Path",
    "TimeConvention",
    "autoguidance",
    "classifier_free",
    "conditional",
    "convert_time",
    "convert_velocity",
    "dopri5",
    "euler",
    "euler_maruyama",
    "heun",
    "mixflow",
    "rae_grid",
    "rae_shift_factor",
    "repa_heun",
    "shift_noise_level",
    "sit_sde_grid",
    "uniform_grid",
]
