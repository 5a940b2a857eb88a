"""GPU-only behaviour of the fast path, checked on a CUDA machine (skipped where there is none, as in CI).

* the SDE noise prefetched through pinned memory gives bit-identical samples to the direct draw;
* ``sample_to_npz``'s asynchronous pinned copies write the same bytes as a synchronous generate-then-copy loop;
* CUDA graphs (torch.compile ``reduce-overhead``) reproduce the compiled model's sampler output, for CFG and for
  autoguidance (two graphed models whose outputs are combined after both ran);
* the compiled training step follows the eager one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixflow_bench.flow import Path, TimeConvention, autoguidance, classifier_free, euler, euler_maruyama
from mixflow_bench.flow.samplers import uniform_grid
from mixflow_bench.recipes.schema import SampleSection
from mixflow_bench.sampling import quantize, sample_to_npz
from mixflow_bench.sampling.fast import FastPath, prefetch_to, prepare_model
from mixflow_bench.sampling.models import resolve_model
from mixflow_bench.sampling.seeding import initial_noise, sample_labels, step_noise
from mixflow_bench.sampling.velocity import model_generator, precision_context

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _randomized(name: str, seed: int = 0):
    spec, net = resolve_model(name, random_init=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return spec, net.to(CUDA).eval()


def test_prefetched_sde_noise_is_bit_identical():
    spec, net = _randomized("sit-s-8")
    x = initial_noise(0, range(4), tuple(spec.latent_shape)).to(CUDA)
    y = torch.arange(4, device=CUDA)

    def draw(i):
        return step_noise(0, range(4), tuple(spec.latent_shape), i)

    path = Path("linear", TimeConvention.DATA_AT_1)
    v = classifier_free(net, y, 1.5, channels=3)
    with torch.no_grad():
        direct = euler_maruyama(v, x, path, steps=12, noise=lambda i: draw(i).to(CUDA))
        ahead = euler_maruyama(v, x, path, steps=12, noise=prefetch_to(CUDA, draw))
    assert torch.equal(direct, ahead)


def test_async_image_copies_write_the_synchronous_bytes(tmp_path):
    spec, net = resolve_model("toy-mlp", overrides={"data_shape": [3, 16, 16], "hidden": 64, "depth": 2})
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    cfg = SampleSection(sampler="sde", steps=5)
    gen = model_generator(spec, net, cfg, device=CUDA)
    out = sample_to_npz(gen, 40, tmp_path / "a.npz", seed=2, batch_size=8, shard_size=16, progress=False)
    labels = sample_labels(2, 40, spec.num_classes, "uniform")
    rows = []
    for k in range(3):  # shards of 16 are cut into batches of 8 (the last shard holds 8)
        for lo in range(16 * k, min(16 * (k + 1), 40), 8):
            idx = list(range(lo, min(lo + 8, 16 * (k + 1), 40)))
            images = gen.generate(
                initial_noise(2, idx, tuple(spec.latent_shape)),
                torch.from_numpy(labels[idx]),
                lambda s, b=idx: step_noise(2, b, tuple(spec.latent_shape), s),
            )
            torch.cuda.synchronize()
            rows.append(quantize(images.cpu()))
    assert np.array_equal(np.load(out)["arr_0"], np.concatenate(rows))


def _sampler_outputs(fast: FastPath, main, guide, spec_main, guided: str):
    x = initial_noise(1, range(8), tuple(spec_main.latent_shape)).to(CUDA)
    y = torch.arange(8, device=CUDA)
    m, g = prepare_model(main, fast), prepare_model(guide, fast) if guide is not None else None
    outs = []
    with torch.no_grad(), precision_context(fast.precision, CUDA):
        for _ in range(2):  # the second run replays the captured graphs
            # the models' raw outputs (no .float() copy): the main output must survive the guide's replay
            v = classifier_free(m, y, 1.5, channels=3) if guided == "cfg" else autoguidance(m, g, y, 1.4)
            outs.append(euler(v, x, uniform_grid(6, TimeConvention.DATA_AT_1)).float())
    return outs


@pytest.mark.parametrize("guided", ["cfg", "autoguidance"])
def test_cuda_graphs_reproduce_the_compiled_sampler(guided):
    torch._dynamo.reset()
    spec, main = _randomized("sit-s-8", 0)
    guide = _randomized("sit-s-4", 1)[1] if guided == "autoguidance" else None  # another graph, as RAE's DiT^DH-S
    eager = _sampler_outputs(FastPath(precision="bf16", compile=False), main, guide, spec, guided)
    graphed = _sampler_outputs(
        FastPath(precision="bf16", compile=True, compile_mode="reduce-overhead"), main, guide, spec, guided
    )
    exact = _sampler_outputs(FastPath(precision="fp32", compile=False), main, guide, spec, guided)[0]
    assert torch.equal(graphed[0], graphed[1])  # replays are deterministic and read fresh inputs
    for out in (eager[0], graphed[0]):
        rel = (out - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
        assert rel.max() < 2e-2, rel  # bf16 against fp32
    rel = (graphed[0] - eager[0]).flatten(1).norm(dim=1) / eager[0].flatten(1).norm(dim=1)
    assert rel.max() < 2e-2, rel


def test_compiled_training_step_follows_eager(tmp_path):
    from mixflow_bench.flow.objectives import mixflow
    from mixflow_bench.train.batches import InMemoryBatches
    from mixflow_bench.train.engine import TrainConfig, train

    spec, _ = resolve_model("sit-s-8", random_init=True)
    data = torch.randn(64, *spec.latent_shape)
    labels = torch.randint(1000, (64,))
    losses = {}
    for compile_ in (False, True):
        _, net = _randomized("sit-s-8", 0)
        objective = mixflow(Path("linear", TimeConvention.DATA_AT_1), gamma=0.8)
        cfg = TrainConfig(steps=4, global_batch_size=16, lr=1e-4, compile=compile_, checkpoint_every=100,
                          log_every=1, device="cuda")  # fmt: skip
        batches = InMemoryBatches(data, labels, global_batch_size=16, seed=0)
        result = train(net, objective, batches, cfg, tmp_path / str(compile_), progress=False)
        losses[compile_] = np.array([h["loss"] for h in result.history])
    assert len(losses[True]) == 4
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
