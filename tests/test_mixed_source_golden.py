"""κ-FC mixed source against fixed outputs of the official code (NazirNayal8/MixFlow 64bc628; ``tests/golden.py``).

No official checkout is needed: ``tests/fixtures/golden/`` holds the official training step's loss and gradients
(``DiffusionModel.training_step`` with its released settings: w ~ U(0, 1) per example, the Gaussians' parameters
interpolated, the flow target ``x1 - x0`` differentiated through x0, the KL of the un-interpolated source weighted
by beta), run with a source network whose outputs are parameters and a one-layer velocity network; the EDM
SongUNet's velocity (time t in [0, 1] as the noise label, attention); and the source U-Net's mean / log variance.
"""

from __future__ import annotations

import pytest
import torch
from golden import assert_close, fill_, load
from torch import nn

from mixflow_bench.flow.mixed_source import MixedSourceFlow, MixedSourceModel
from mixflow_bench.models.songunet import SongUNetConfig, songunet
from mixflow_bench.models.source_network import SourceUNet

ULPS = 64  # rounding only (the training step in float32, the networks in float64)
EMB_ULPS = 2**27  # float64 ulps (~3e-8 relative): SongUNet's positional embedding is float32 on both sides


class _Source(nn.Module):
    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.log_var = nn.Parameter(mean.clone()), nn.Parameter(log_var.clone())

    def forward(self, x1, y=None, noise=None):
        return self.mean, self.log_var


class _Velocity(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())

    def forward(self, x, t, y=None):
        return torch.einsum("dc,bchw->bdhw", self.weight, x) * (1 + t.reshape(-1, 1, 1, 1)) + self.bias[:, None, None]


def test_training_step_loss_and_gradients_match_the_official_step():
    data = load("mixed_source_loss")
    model = MixedSourceModel(_Velocity(data["weight"], data["bias"]), _Source(data["mean"], data["log_var"]))
    objective = MixedSourceFlow(beta=float(data["beta"]))
    x1 = data["x1"]
    randomness = {"u_time": data["t"], "u_w": data["w"], "noise": data["eps"],
                  "noise_source": torch.zeros_like(x1), "noise_kappa": torch.zeros_like(x1)}  # fmt: skip
    loss = objective.loss(model, x1, torch.zeros(len(x1), dtype=torch.long), randomness).mean()
    assert_close(loss, data["loss"], ULPS, "loss")
    loss.backward()
    for name, param in (("mean", model.source.mean), ("log_var", model.source.log_var),
                        ("weight", model.velocity.weight), ("bias", model.velocity.bias)):  # fmt: skip
        assert_close(param.grad, data[f"grad_{name}"], ULPS, f"gradient of {name}")


def test_the_loss_fixture_is_informative():
    """The KL term is not negligible at this beta and the examples draw different mixture weights."""
    data = load("mixed_source_loss")
    kl = 0.5 * (data["mean"] ** 2 + data["log_var"].exp() - 1 - data["log_var"]).flatten(1).sum(1).mean()
    assert float(data["beta"] * kl) > 1e-2 * float(data["loss"])
    assert len(set(data["w"].tolist())) == len(data["w"])


def test_songunet_velocity_matches_the_official_network():
    data = load("songunet_forward")
    config = SongUNetConfig(8, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)
    for attention in ("math", "sdpa"):
        net = fill_(songunet(config, attention=attention).double().eval(), 41)
        with torch.no_grad():
            assert_close(net(data["x"], data["t"]), data["velocity"], EMB_ULPS, f"SongUNet ({attention})")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_source_network_mean_and_log_variance_match_the_official_split():
    data = load("source_network_forward")
    net = SourceUNet(resolution=8, block_out_channels=(32, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                     up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1)  # fmt: skip
    net = fill_(net.double().eval(), 51)
    with torch.no_grad():
        mean, log_var = net(data["x"])
    assert_close(mean, data["mean"], ULPS, "source mean")
    assert_close(log_var, data["log_var"], ULPS, "source log variance")
