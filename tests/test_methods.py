"""The method registry is the one list of training methods: a fifth method defined and registered in this file (one
objective, one ``register_method`` call, no other file edited) passes recipe validation, trains a toy model a few
steps through the real training engine, is sampled with the samplers its output allows, names the post-trained
pipeline variant and is a row of the results table. The built-in methods build the objectives they always built,
and the toy ensemble's batched MixFlow equals :class:`FlowMatching` member by member."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from mixflow_bench.methods import METHODS, Method, get_method, register_method, unregister_method

torch.set_num_threads(1)
NAME = "test-endpoint-fm"


@dataclass
class EndpointFlowMatching:
    """Flow matching with times drawn only from {0.25, 0.75} (DATA_AT_1 linear path): a method the project lacks."""

    null_label: int

    def draw(self, batch_size: int, sample_shape: tuple[int, ...], generator: torch.Generator) -> dict:
        return {"noise": torch.randn((batch_size, *sample_shape), generator=generator),
                "coin": torch.rand(batch_size, generator=generator)}  # fmt: skip

    def loss(self, model, x1, y, randomness) -> torch.Tensor:
        t = torch.where(randomness["coin"] < 0.5, 0.25, 0.75).to(x1)
        tb = t.reshape(-1, *([1] * (x1.ndim - 1)))
        noise = randomness["noise"].to(x1)
        pred = model(tb * x1 + (1 - tb) * noise, t, y)
        return (pred - (x1 - noise)).pow(2).flatten(1).mean(1)


@pytest.fixture
def registered():
    register_method(Method(NAME, lambda section, spec: EndpointFlowMatching(spec.num_classes), "two-time FM"))
    yield NAME
    unregister_method(NAME)


def _recipe(tmp_path: Path, kind: str, sampler: str = "euler") -> Path:
    recipe = {
        "name": "method-test",
        "model": {"name": "toy-mlp", "overrides": {"data_shape": [8, 8], "num_classes": 10, "hidden": 32, "depth": 1}},
        "data": {"source": "digits", "seed": 0},
        "train": {"init": "scratch", "steps": 3, "batch_size": 16, "lr": 1e-3, "ema_decay": 0.5,
                  "checkpoint_every": 3, "objective": {"kind": kind}},
        "sample": {"sampler": sampler, "steps": 4, "num": 4, "batch_size": 4, "shard_size": 4},
    }  # fmt: skip
    path = tmp_path / "method-test.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_registered_method_reaches_recipes_training_sampling_pipeline_and_table(tmp_path, registered) -> None:
    from mixflow_bench.cli.main import cli
    from mixflow_bench.pipeline.stages import posttrained_name, variants
    from mixflow_bench.pipeline.tasks import train_task
    from mixflow_bench.recipes import RecipeError, load_recipe
    from mixflow_bench.results.records import make_record
    from mixflow_bench.results.table import build_table, to_markdown

    # recipe validation: the new name is accepted, a GM sampler is refused for its velocity output
    recipe = load_recipe(_recipe(tmp_path, registered))
    assert recipe.train.objective.kind == registered
    with pytest.raises(RecipeError, match="sample.sampler"):
        load_recipe(_recipe(tmp_path, registered, sampler="gm-ode2"))
    with pytest.raises(RecipeError, match="train.objective.kind"):
        load_recipe(_recipe(tmp_path, "no-such-method"))

    # training: three steps of the real engine on the toy MLP, with the method's objective
    out = Path(train_task(str(_recipe(tmp_path, registered)), None, str(tmp_path / "train")))
    state = torch.load(out, weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values())

    # sampling: the trained model, with a sampler the method allows
    assert get_method(registered).samplers() == get_method("fm").samplers()
    npz = tmp_path / "s.npz"
    args = ["sample", str(_recipe(tmp_path, registered)), f"model.checkpoint={out}", "--out", str(npz)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert np.load(npz)["arr_0"].shape == (4, 8, 8, 3)

    # pipeline: the post-trained variant is named by the method; the table shows it as such
    assert posttrained_name(recipe) == registered and registered in variants(recipe, tmp_path)
    record = make_record("reproduce", {"fd": 1.5}, name="method-test-x", experiment="method-test", method=registered,
                         variant="post-trained")  # fmt: skip
    table = build_table([record], [])
    assert to_markdown(table).count(registered) >= 1


def test_builtin_methods_build_the_objectives_they_always_built() -> None:
    from mixflow_bench.flow import FlowMatching
    from mixflow_bench.flow import Path as FlowPath
    from mixflow_bench.flow.conventions import TimeConvention
    from mixflow_bench.flow.gmflow import GMFlowObjective
    from mixflow_bench.flow.mixed_source import MixedSourceFlow
    from mixflow_bench.models.zoo import get_spec
    from mixflow_bench.recipes.schema import ObjectiveSection

    assert set(METHODS) >= {"fm", "mixflow", "gmflow", "mixed-source"}
    rae = get_spec("rae-dith-xl-256")
    section = ObjectiveSection(kind="mixflow", t_dist="logit-normal", gamma=0.4, time_shift="auto", label_dropout=0.1)
    expected = FlowMatching(path=FlowPath("linear", TimeConvention.DATA_AT_0), t_dist="logit-normal",
                            mixture="slowed", gamma=0.4, time_shift=(768 * 16 * 16 / 4096) ** 0.5, label_dropout=0.1,
                            null_label=1000)  # fmt: skip
    assert get_method("mixflow").build_objective(section, rae) == expected
    fm = get_method("fm").build_objective(dataclasses.replace(section, kind="fm"), rae)
    assert fm == dataclasses.replace(expected, mixture=None)

    gm_section = ObjectiveSection(kind="gmflow", t_dist="logit-normal", params={"trans_ratio": 0.5, "weight": 2.0})
    gm = get_method("gmflow").build_objective(gm_section, get_spec("gmflow-dit-xl-2"))
    assert gm == GMFlowObjective(trans_ratio=0.5, t_dist="logit-normal", weight=2.0, null_label=1000)
    with pytest.raises(ValueError, match="trains a gm model"):
        get_method("gmflow").build_objective(gm_section, rae)  # a velocity network has no GM head

    ms_section = ObjectiveSection(kind="mixed-source", params={"variant": "fast-ode", "beta": 0.1, "kappa": "class"})
    ms = get_method("mixed-source").build_objective(ms_section, get_spec("mixed-source-cifar10"))
    assert ms == MixedSourceFlow(beta=0.1, kappa="class", weighting="one")
    assert get_method("mixed-source").source == "learned" and get_method("gmflow").output == "gm"


def test_toy_ensemble_mixflow_is_flow_matching_member_by_member() -> None:
    """The ensemble's batched loss against FlowMatching.loss on each member's own model and draws."""
    from mixflow_bench.flow import FlowMatching, mixflow
    from mixflow_bench.flow import Path as FlowPath
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP
    from mixflow_bench.toy.ensemble import Ensemble, member_losses

    g = torch.Generator().manual_seed(0)
    template = ToyVelocityMLP(data_shape=(8, 8), num_classes=10, hidden=16, depth=1)
    states = []
    for _ in range(3):
        m = ToyVelocityMLP(data_shape=(8, 8), num_classes=10, hidden=16, depth=1)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3, generator=g)
        states.append(m.state_dict())
    ens = Ensemble(template, states)
    gamma, beta = torch.tensor([0.0, 0.8, 0.4]), torch.tensor([False, True, True])
    x1, noise = torch.randn(3, 5, 8, 8, generator=g), torch.randn(3, 5, 8, 8, generator=g)
    y = torch.randint(10, (3, 5), generator=g)
    u_t, u_m = torch.rand(3, 5, generator=g), torch.rand(3, 5, generator=g)
    got = member_losses(ens, x1, y, noise, u_t, u_m, gamma, beta)
    path = FlowPath("linear")
    objectives = [FlowMatching(path=path, null_label=10), mixflow(path, 0.8, null_label=10),
                  mixflow(path, 0.4, null_label=10)]  # fmt: skip
    for e, (objective, state) in enumerate(zip(objectives, states)):
        model = ToyVelocityMLP(data_shape=(8, 8), num_classes=10, hidden=16, depth=1)
        model.load_state_dict(state)
        draws = {"noise": noise[e], "u_time": u_t[e].double(), "n_time": torch.zeros(5, dtype=torch.float64),
                 "u_mix": u_m[e].double(), "u_drop": torch.ones(5)}  # fmt: skip
        want = objective.loss(model, x1[e], y[e], draws)
        # float32 (ensemble) against float64-drawn times rounded once: a few float32 ulps of the loss
        torch.testing.assert_close(got[e], want, rtol=1e-5, atol=0.0)
