"""The fast sampling path's switches: recipe fields reach the model, change the shard fingerprint, and the
one-step-ahead prefetch returns exactly what a direct call returns. (GPU-only behaviour: tests/test_gpu_paths.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner
from tolerance import assert_close_to_scale

from mixflow_bench.recipes.loader import load_recipe
from mixflow_bench.recipes.schema import SampleSection
from mixflow_bench.sampling import sample_to_npz
from mixflow_bench.sampling.fast import OneAhead, prefetch_to
from mixflow_bench.sampling.models import resolve_model
from mixflow_bench.sampling.velocity import fast_path_of, model_generator

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)


def test_one_ahead_returns_each_index_once_and_fetches_the_next():
    calls: list[int] = []

    def fetch(i: int) -> torch.Tensor:
        calls.append(i)
        return torch.tensor([float(i)])

    get = OneAhead(fetch)
    for i in range(4):  # in order: each call returns fetch(i) and has already fetched i + 1
        assert get(i).item() == i
        assert calls[-1] == i + 1
    assert calls == [0, 1, 2, 3, 4]  # each index fetched exactly once
    assert get(7).item() == 7  # out of order: fetched directly, never the stale step 4
    assert get(2).item() == 2
    assert calls[-4:] == [7, 8, 2, 3]


def test_prefetch_is_the_draw_itself_on_cpu():
    def draw(i):
        return torch.full((2,), float(i))

    assert prefetch_to(torch.device("cpu"), draw) is draw
    assert prefetch_to(torch.device("cuda"), None) is None


def test_cuda_graphs_without_compile_names_the_key():
    with pytest.raises(ValueError, match=r"tiny-digits.*sample\.cuda_graphs.*compile"):
        load_recipe("tiny-digits", {"sample": {"cuda_graphs": True}})
    r = load_recipe("tiny-digits", {"sample": {"cuda_graphs": True, "compile": True}})
    assert fast_path_of(r.sample).compile_mode == "reduce-overhead"


def test_attention_switch_reaches_the_model_and_keeps_the_output():
    spec, net = resolve_model("sit-s-8", random_init=True)
    torch.manual_seed(0)
    for p in net.parameters():  # zero-initialised adaLN would make every output zero
        torch.nn.init.normal_(p, std=0.02)
    cfg = SampleSection(sampler="euler", steps=2, attention="math")
    gen_math = model_generator(spec, net, cfg)
    assert {b.attn.attention for b in net.blocks} == {"math"}
    noise, y = torch.randn(2, *spec.latent_shape), torch.tensor([1, 2])
    images_math = gen_math.generate(noise, y, lambda i: None)
    gen_sdpa = model_generator(spec, net, dataclasses.replace(cfg, attention="sdpa"))
    assert {b.attn.attention for b in net.blocks} == {"sdpa"}
    # the two kernels compute the same softmax attention (they differ by float rounding only)
    assert_close_to_scale(gen_sdpa.generate(noise, y, lambda i: None), images_math, ulps=256)
    assert gen_math.fingerprint != gen_sdpa.fingerprint


def test_fast_settings_do_not_mix_with_exact_shards(tmp_path):
    spec, net = resolve_model("toy-mlp", overrides={"hidden": 16, "depth": 1})
    exact = SampleSection(sampler="euler", steps=2)
    sample_to_npz(model_generator(spec, net, exact), 4, tmp_path / "s.npz", batch_size=2, shard_size=2,
                  progress=False, merge=False)  # fmt: skip
    fast = dataclasses.replace(exact, precision="bf16")
    with pytest.raises(ValueError, match="other settings"):
        sample_to_npz(model_generator(spec, net, fast), 4, tmp_path / "s.npz", batch_size=2, shard_size=2,
                      progress=False)  # fmt: skip


def test_fast_flag_sets_the_fast_switches(tmp_path, monkeypatch):
    from mixflow_bench.cli.main import cli
    from mixflow_bench.launch import local

    seen = {}
    monkeypatch.setattr(local.LocalLauncher, "run", lambda self, task: seen.setdefault("task", task))
    result = CliRunner().invoke(cli, ["sample", "tiny-digits", "--fast", "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 0, result.output
    sample = seen["task"].args["sample"]
    assert (sample["precision"], sample["compile"], sample["attention"]) == ("bf16", True, "sdpa")
    result = CliRunner().invoke(cli, ["reproduce", "digits", "--fast"])
    assert result.exit_code != 0 and "--fast applies to full pipelines" in result.output
