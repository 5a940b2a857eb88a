"""EMA, LR schedule, gradient clipping and post-training initialisation against independent computations."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

from mixflow_bench.train.batches import InMemoryBatches
from mixflow_bench.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mixflow_bench.train.ema import create_ema, update_ema
from mixflow_bench.train.engine import TrainConfig, train
from mixflow_bench.train.schedule import learning_rate

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import FlowMatchingObjective, make_data, make_model  # noqa: E402

B = 8


def _batches(n: int = 32) -> InMemoryBatches:
    x, y = make_data(n)
    return InMemoryBatches(x, y, B, seed=2)


def _first_batch_and_draw(seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x1, y = next(iter(_batches()))
    generator = torch.Generator().manual_seed(seed)  # the engine's training generator
    return x1, y, FlowMatchingObjective().draw(B, tuple(x1.shape[1:]), generator)


def test_update_ema_matches_closed_form() -> None:
    model = make_model()
    ema = create_ema(model)
    e0 = {k: v.double().clone() for k, v in ema.named_parameters()}
    decay, snapshots = 0.75, []
    for k in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.calls.fill_(10 + k)
        snapshots.append({n: p.double().clone() for n, p in model.named_parameters()})
        update_ema(ema, model, decay)
    for name, value in ema.named_parameters():
        # e_K = d^K e_0 + sum_k (1-d) d^(K-k) p_k
        expected = decay**4 * e0[name] + sum(
            (1 - decay) * decay ** (3 - k) * s[name] for k, s in enumerate(snapshots)
        )
        torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6)
    assert ema.calls.item() == 13  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.parameters())


def test_engine_ema_follows_weights_every_step(tmp_path: Path) -> None:
    model = make_model()
    snapshots = [{n: p.detach().double().clone() for n, p in model.named_parameters()}]
    config = TrainConfig(
        steps=5, global_batch_size=B, lr=1e-2, ema_decay=0.6, log_every=1, checkpoint_every=5
    )

    def record(_: dict) -> None:
        snapshots.append({n: p.detach().double().clone() for n, p in model.named_parameters()})

    train(model, FlowMatchingObjective(), _batches(), config, tmp_path, progress=False, on_log=record)
    ema = load_checkpoint(latest_checkpoint(tmp_path))["ema"]
    d = config.ema_decay
    for name in snapshots[0]:
        expected = d**5 * snapshots[0][name] + sum(
            (1 - d) * d ** (5 - k) * snapshots[k][name] for k in range(1, 6)
        )
        torch.testing.assert_close(ema[name].double(), expected, rtol=1e-5, atol=1e-6)


def test_learning_rate_formulas() -> None:
    # RAE: linear decay 2e-4 -> 2e-5 between step 40 and 800 (here in steps)
    rae = dict(base_lr=2e-4, schedule="linear", final_lr=2e-5, decay_start=40, decay_end=800)
    assert learning_rate(0, **rae) == 2e-4 and learning_rate(40, **rae) == 2e-4
    assert learning_rate(420, **rae) == pytest.approx(2e-4 - 1.8e-4 * 380 / 760, rel=1e-12)
    assert learning_rate(800, **rae) == pytest.approx(2e-5) and learning_rate(5000, **rae) == pytest.approx(
        2e-5
    )
    cos = dict(base_lr=1.0, schedule="cosine", final_lr=0.1, warmup_steps=10, decay_start=10, decay_end=110)
    assert learning_rate(0, **cos) == pytest.approx(0.1) and learning_rate(4, **cos) == pytest.approx(0.5)
    assert learning_rate(60, **cos) == pytest.approx(0.55)  # half way: mean of base and final
    assert learning_rate(35, **cos) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(7, base_lr=3.0) == 3.0
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        learning_rate(0, base_lr=1.0, schedule="step")


def test_engine_uses_scheduled_lr(tmp_path: Path) -> None:
    config = TrainConfig(
        steps=6,
        global_batch_size=B,
        lr=1e-3,
        lr_schedule="linear",
        final_lr=1e-4,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=6,
    )
    result = train(make_model(), FlowMatchingObjective(), _batches(), config, tmp_path, progress=False)
    expected = [5e-4, 1e-3, 1e-3, 1e-3 - 9e-4 / 4, 1e-3 - 9e-4 / 2, 1e-3 - 9e-4 * 3 / 4]
    assert [r["lr"] for r in result.history] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("clip", [None, 0.01])
def test_grad_norm_and_clipping_against_manual_gradient(tmp_path: Path, clip: float | None) -> None:
    model = make_model()
    reference = copy.deepcopy(model)
    config = TrainConfig(
        steps=1,
        global_batch_size=B,
        lr=1e-3,
        betas=(0.8, 0.99),
        grad_clip=clip,
        seed=4,
        log_every=1,
        checkpoint_every=1,
    )
    result = train(model, FlowMatchingObjective(), _batches(), config, tmp_path, progress=False)
    x1, y, randomness = _first_batch_and_draw(seed=4)
    FlowMatchingObjective().loss(reference, x1, y, randomness).mean().backward()
    grads = {n: p.grad.double() for n, p in reference.named_parameters()}
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    assert result.history[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    scale = min(1.0, clip / (norm + 1e-6)) if clip else 1.0
    state = load_checkpoint(latest_checkpoint(tmp_path))["optimizer"]["state"]
    for index, name in enumerate(n for n, _ in reference.named_parameters()):
        # after one AdamW step the first moment is (1 - beta1) * (clipped) gradient
        torch.testing.assert_close(
            state[index]["exp_avg"].double(), 0.2 * scale * grads[name], rtol=1e-5, atol=1e-9
        )


@pytest.mark.parametrize("form", ["training-checkpoint", "raw-path"])
def test_post_training_starts_from_init_weights(tmp_path: Path, form: str) -> None:
    source, other = make_model(seed=1), make_model(seed=2)
    weights = {k: v.clone() for k, v in source.state_dict().items()}
    if form == "training-checkpoint":
        init = {"model": weights, "ema": {k: v.clone() for k, v in other.state_dict().items()}}
        ema0 = other.state_dict()
    else:
        init = save_checkpoint(tmp_path / "raw.pt", weights)
        ema0 = weights
    model = make_model(seed=3)
    decay = 0.5
    # lr = 0: the weights must stay exactly the init weights; the EMA takes one step from its init
    config = TrainConfig(
        steps=1, global_batch_size=B, lr=0.0, ema_decay=decay, log_every=1, checkpoint_every=1
    )
    result = train(
        model,
        FlowMatchingObjective(),
        _batches(),
        config,
        tmp_path / "run",
        init_checkpoint=init,
        progress=False,
    )
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    for name, param in source.named_parameters():
        assert torch.equal(state["model"][name], param.detach())
        torch.testing.assert_close(state["ema"][name], decay * ema0[name] + (1 - decay) * param.detach())
    x1, y, randomness = _first_batch_and_draw(seed=0)
    source.train()
    with torch.no_grad():
        expected_loss = float(FlowMatchingObjective().loss(source, x1, y, randomness).mean())
    assert result.history[0]["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_bf16_autocast_loss_close_to_fp32(tmp_path: Path) -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(
            steps=1, global_batch_size=B, precision=precision, log_every=1, checkpoint_every=1
        )
        result = train(
            make_model(), FlowMatchingObjective(), _batches(), config, tmp_path / precision, progress=False
        )
        losses[precision] = result.history[0]["loss"]
    assert losses["bf16"] != losses["fp32"]  # autocast really ran in bf16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        TrainConfig(steps=1, global_batch_size=2, precision="fp16")
    with pytest.raises(ValueError, match="needs final_lr"):
        TrainConfig(steps=1, global_batch_size=2, lr_schedule="cosine")
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['batch'\]"):
        TrainConfig.from_dict({"steps": 1, "global_batch_size": 2, "batch": 3})
