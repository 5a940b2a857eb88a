"""GM-DiT in the zoo: the released checkpoint's names and shapes load strictly; K mismatches are clear errors;
GM sampling and recipe checks."""

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from mixflow_bench.cli.main import cli
from mixflow_bench.models.gmdit import GMDiT, checkpoint_components
from mixflow_bench.models.zoo import build_model, get_spec


def official_gmdit_shapes(k=8, hidden=1152, depth=28, patch=2, channels=4, classes=1000, inner=1024):
    """Names and shapes of the Diffusers GM-DiT transformer (``_GMDiTTransformer2DModel``), written out."""
    shapes = {
        "pos_embed.proj.weight": (hidden, channels, patch, patch),
        "pos_embed.proj.bias": (hidden,),
        "emb.timestep_embedder.linear_1.weight": (hidden, 256),
        "emb.timestep_embedder.linear_1.bias": (hidden,),
        "emb.timestep_embedder.linear_2.weight": (hidden, hidden),
        "emb.timestep_embedder.linear_2.bias": (hidden,),
        "emb.class_embedder.embedding_table.weight": (classes + 1, hidden),
        "proj_out_1.weight": (2 * hidden, hidden),
        "proj_out_1.bias": (2 * hidden,),
        "proj_out_2.weight": (patch * patch * k * (channels + 1), hidden),
        "proj_out_2.bias": (patch * patch * k * (channels + 1),),
        "gm_out.logstd_layers.1.weight": (inner, hidden),
        "gm_out.logstd_layers.1.bias": (inner,),
        "gm_out.logstd_layers.3.weight": (1, inner),
        "gm_out.logstd_layers.3.bias": (1,),
    }
    for i in range(depth):
        b = f"transformer_blocks.{i}."
        shapes[b + "norm1.linear.weight"] = (6 * hidden, hidden)
        shapes[b + "norm1.linear.bias"] = (6 * hidden,)
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            shapes[b + f"attn1.{name}.weight"] = (hidden, hidden)
            shapes[b + f"attn1.{name}.bias"] = (hidden,)
        shapes[b + "ff.net.0.proj.weight"] = (4 * hidden, hidden)
        shapes[b + "ff.net.0.proj.bias"] = (4 * hidden,)
        shapes[b + "ff.net.2.weight"] = (hidden, 4 * hidden)
        shapes[b + "ff.net.2.bias"] = (hidden,)
    return shapes


def test_released_gmdit_layout_loads_strictly():
    shapes = official_gmdit_shapes()
    with torch.device("meta"):
        model = get_spec("gmflow-dit-xl-2").build()
        state = {name: torch.empty(shape, dtype=torch.bfloat16) for name, shape in shapes.items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes
    model.load_state_dict(state, strict=True, assign=True)
    assert checkpoint_components(state) == 8


def small(k=3):
    torch.manual_seed(0)
    return GMDiT(num_gaussians=k, input_size=8, hidden=32, depth=1, heads=2, logstd_inner=16, num_classes=10)


def test_k_mismatch_between_model_and_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in small(3).state_dict().items()}, str(path))
    overrides = dict(input_size=8, hidden=32, depth=1, heads=2, logstd_inner=16, num_classes=10)
    build_model("gmflow-dit-xl-2", weights_path=path, num_gaussians=3, **overrides)  # fits
    with pytest.raises(ValueError, match=r"K = 3 .* K = 5"):
        build_model("gmflow-dit-xl-2", weights_path=path, num_gaussians=5, **overrides)


def test_gm_sampling_of_a_gm_model_runs_with_probabilistic_guidance():
    from mixflow_bench.recipes.schema import GuidanceSection, SampleSection
    from mixflow_bench.sampling.gm import integrate_gm

    model = small(3).eval()
    spec = type("Spec", (), {"num_classes": 10})()
    y = torch.tensor([1, 2])
    noise = torch.randn(2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    draws = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(3 * 3)]
    for sampler in ("gm-sde2", "gm-ode2"):
        cfg = SampleSection(sampler=sampler, steps=3, guidance=GuidanceSection(kind="probabilistic", scale=0.3))
        out = integrate_gm(spec, model, y, noise, cfg, lambda i: draws[i])
        assert out.shape == noise.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "override, message",
    [("sample.guidance.scale=1.0", "[0, 1)"), ("sample.steps=0", "positive"), ("sample.substeps=0", "positive")],
)
def test_bad_gmflow_recipe_values_are_one_line_errors(override, message):
    res = CliRunner().invoke(cli, ["reproduce", "gmflow-256-ode2-nfe8", override, "--plan"])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output


def test_checkerboard_study_nfe_zero_is_a_one_line_error():
    res = CliRunner().invoke(cli, ["reproduce", "gmflow-checkerboard", "study.eval_steps=[0, 4]"])
    assert res.exit_code != 0 and "positive" in res.output and "Traceback" not in res.output


def test_gmflow_256_plan_and_recipes_list(monkeypatch):
    from mixflow_bench.cli.common import console

    monkeypatch.setattr(console, "width", 250)
    runner = CliRunner()
    res = runner.invoke(cli, ["reproduce", "gmflow-256", "--plan"], terminal_width=200)
    assert res.exit_code == 0 and "gm-ode2 32" in res.output and "remaining" in res.output
    res = runner.invoke(cli, ["recipes", "list"], terminal_width=200)
    assert "gmflow-256" in res.output and "gmflow-checkerboard" in res.output
