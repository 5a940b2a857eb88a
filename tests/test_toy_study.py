"""The small reproduction: its reported FD equals an independent recomputation from the saved checkpoint."""

import json

import numpy as np
import torch
from scipy import linalg

from mixflow_bench.recipes import load_recipe
from mixflow_bench.toy.study import _eval_inputs, load_study_data, run_study


def test_study_numbers_match_an_independent_recomputation(tmp_path):
    recipe = load_recipe(
        "toy2d",
        {
            "model": {"overrides": {"hidden": 32, "depth": 1}},
            "data": {"num_train": 1024, "num_heldout": 512},
            "study": {
                "baseline_steps": 40,
                "posttrain_steps": 20,
                "batch_size": 128,
                "eval_steps": [4, 8],
                "num_eval_samples": 256,
                "slow_flow_samples": 64,
                "slow_flow_steps": 4,
            },
        },
    )
    out = tmp_path / "run"
    result = run_study(recipe, out, seeds=[0], gammas=[0.5, 1.0], results_dir=tmp_path / "results")

    assert result["trained_methods"] == ["baseline", "fm-control", "fm-beta", "mixflow-g0.5", "mixflow-g1"]
    assert result["methods"][5:] == ["exact FM-optimal", "exact MixFlow-optimal g0.5", "exact MixFlow-optimal g1"]
    saved = json.loads((out / "study.json").read_text())
    assert saved["summary"]["baseline"]["8"]["fd"]["mean"] == saved["per_seed"]["0"]["baseline"]["8"]["fd"]
    assert (out / "fd_vs_steps.png").stat().st_size > 0 and (out / "slow_flow.png").stat().st_size > 0
    records = sorted(p.name for p in (tmp_path / "results").glob("*.json"))
    assert records == sorted(f"study-toy2d-{m}.json" for m in result["trained_methods"])

    # independent recomputation of the baseline's FD at 8 Euler steps from its saved EMA weights
    from mixflow_bench.models.toy_mlp import ToyVelocityMLP

    ema = torch.load(out / "seed0" / "baseline.pt")["ema"]
    model = ToyVelocityMLP((2,), 1, hidden=32, depth=1)
    model.load_state_dict(ema)
    data = load_study_data(recipe)
    x, y = _eval_inputs(data, 256, 0)
    with torch.no_grad():
        for i in range(8):  # Euler in data-ward time from 0 to 1, written out by hand
            t = torch.full((len(x),), i / 8)
            x = x + model(x, t, y) / 8
    a, b = x.double().numpy(), data.heldout.x.double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fd = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert abs(fd - saved["per_seed"]["0"]["baseline"]["8"]["fd"]) < 1e-4 * max(1.0, fd)

