"""`mixflow-bench eval` end to end (random-init weights of the same network, so offline) and its refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.cli.eval_cmd import command


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    from mixflow_bench.metrics.inception import random_state_dict

    path = tmp_path_factory.mktemp("w") / "random-inception.pth"
    torch.save(random_state_dict(seed=1), path)
    return path


def _imgs(n: int, seed: int, h: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, h, 3), dtype=np.uint8)


def test_eval_same_file_gives_zero_distance_and_full_pr(tmp_path, random_weights):
    s = tmp_path / "s.npz"
    np.savez(s, arr_0=_imgs(10, 0))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        command,
        [
            "--samples",
            str(s),
            "--ref",
            str(s),
            "--json",
            str(out),
            "--inception-weights",
            str(random_weights),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--results-dir",
            str(tmp_path / "results"),
            "--metrics",
            "fid,sfid,prec,rec",
            "--fd-method",
            "eigh",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    m = data["metrics"]
    # identical sample and reference sets: Fréchet distance 0, every point inside its own ball
    assert abs(m["fid"]) < 1e-4 and abs(m["sfid"]) < 1e-4  # traces are O(1e3)
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["precision_float32"] == 1.0 and m["recall_float32"] == 1.0
    w = data["inception_weights"]
    assert w["sha256"] == hashlib.sha256(random_weights.read_bytes()).hexdigest()
    assert w["real_network"] is False and "not a known TF-2015" in data["note"]
    assert data["num_samples"] == 10 and "10 samples" in data["note"]
    assert "(10 samples)" in res.output
    records = list((tmp_path / "results").rglob("*.json"))
    assert records, "no result record written"
    rec = json.loads(records[0].read_text())
    assert rec["kind"] == "eval" and rec["metrics"] == m and rec["num_samples"] == 10


def test_eval_refusals(tmp_path, random_weights):
    good = tmp_path / "g.npz"
    np.savez(good, arr_0=_imgs(6, 1))
    bad = tmp_path / "f.npz"
    np.savez(bad, arr_0=_imgs(6, 1).astype(np.float32) / 255)
    stats_only = tmp_path / "stats.npz"
    np.savez(stats_only, mu=np.zeros(2048), sigma=np.eye(2048), mu_s=np.zeros(2023), sigma_s=np.eye(2023))
    common = ["--inception-weights", str(random_weights), "--device", "cpu", "--results-dir", str(tmp_path)]
    runner = CliRunner()
    r = runner.invoke(command, ["--samples", str(bad), "--ref", str(good), *common])
    assert r.exit_code != 0 and "not uint8" in r.output
    r = runner.invoke(
        command, ["--samples", str(good), "--ref", str(stats_only), "--metrics", "prec", *common]
    )
    assert r.exit_code != 0 and "no images" in r.output
    r = runner.invoke(
        command, ["--samples", str(good), "--ref", str(good), "--metrics", "fid,bogus", *common]
    )
    assert r.exit_code != 0 and "bogus" in r.output
    r = runner.invoke(command, ["--samples", str(good), "--ref", "no-such-artifact-name", *common])
    assert r.exit_code != 0 and "no-such-artifact-name" in r.output


def test_nonfinite_features_refused(tmp_path):
    from mixflow_bench.metrics.features import NonFiniteFeaturesError, extract
    from mixflow_bench.metrics.inception import InceptionOutputs
    from mixflow_bench.metrics.npz_stream import NpzImageReader

    class NaNNet(torch.nn.Module):
        has_logits = True

        def forward(self, x, spatial=True, logits=True):
            f = x.float().mean((2, 3)).repeat(1, 4)
            f[-1, 0] = float("nan")
            return InceptionOutputs(pool=f, spatial=f, logits=f)

    p = tmp_path / "x.npz"
    np.savez(p, arr_0=_imgs(5, 2, 8))
    with NpzImageReader(p) as r, pytest.raises(NonFiniteFeaturesError, match="NaN or inf"):
        extract(r, NaNNet(), device="cpu", batch_size=2, inception_score=False)


def test_stored_reference_stats_are_used(tmp_path):
    """A reference with mu/sigma uses them (not arr_0) for FID, as ADM's read_statistics does."""
    from mixflow_bench.metrics.frechet import GaussianStats, frechet_distance
    from mixflow_bench.metrics.reference import load_reference

    rng = np.random.default_rng(3)
    mu, a = rng.normal(size=2048), rng.normal(size=(2048, 16))
    cov = a @ a.T + np.eye(2048)
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=_imgs(4, 3, 8), mu=mu, sigma=cov, mu_s=mu[:2023], sigma_s=cov[:2023, :2023])
    data = load_reference(ref, net=None, need_fid=True, need_sfid=True, need_pr=False, device="cpu")
    assert data.stats_source == "stored"
    np.testing.assert_array_equal(data.pool_stats.mu, mu)
    same = frechet_distance(data.pool_stats, GaussianStats(mu, cov), "eigh")
    assert abs(same) < 1e-6


def test_fd_dinov2_tiny_model_and_missing_weights(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from mixflow_bench.metrics.dinov2 import fd_dinov2

    with pytest.raises(FileNotFoundError, match="DINOv2"):
        fd_dinov2(tmp_path / "a.npz", tmp_path / "a.npz", None)
    cfg = Dinov2Config(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        patch_size=56,
        image_size=224,
    )
    Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    a = tmp_path / "a.npz"
    np.savez(a, arr_0=_imgs(12, 4))
    assert abs(fd_dinov2(a, a, tmp_path / "dino", method="eigh")) < 1e-6  # identical sets


class StubNet(torch.nn.Module):
    """A cheap stand-in for the feature network (features from pixel statistics) that counts its calls."""

    weights_id = "stub"

    def __init__(self, has_logits: bool = True) -> None:
        super().__init__()
        self.has_logits = has_logits
        self.calls = 0

    def forward(self, x, spatial=True, logits=True):
        from mixflow_bench.metrics.inception import InceptionOutputs

        self.calls += 1
        f = x.float()
        parts = [f.mean((2, 3)), f[:, :, ::4, ::4].flatten(1) / 16, f.std((2, 3))]
        feats = torch.cat(parts, 1)
        pool = feats.repeat(1, 2048 // feats.shape[1] + 1)[:, :2048]
        return InceptionOutputs(pool=pool, spatial=pool[:, :2023], logits=pool[:, :1008] if logits else None)


def _run_eval(samples, ref, metrics, net, tmp_path, **kw):
    from mixflow_bench.metrics.adm import evaluate_adm as evaluate

    kw.setdefault("device", "cpu")
    kw.setdefault("show_progress", False)
    return evaluate(samples, ref, metrics, net=net, cache_dir=tmp_path / "cache", **kw)


def _truncated_npz(path: Path, declared: int, present: int, h: int = 8) -> None:
    header = {"descr": "|u1", "fortran_order": False, "shape": (declared, h, h, 3)}
    with zipfile.ZipFile(path, "w") as z, z.open("arr_0.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(_imgs(present, 5, h).tobytes())


def test_bad_inputs_fail_before_the_network_runs(tmp_path):
    from mixflow_bench.metrics.npz_stream import NpzFormatError

    good = tmp_path / "good.npz"
    np.savez(good, arr_0=_imgs(8, 1, 8))
    empty, three, cut, stats = (tmp_path / f"{n}.npz" for n in ("empty", "three", "cut", "stats"))
    np.savez(empty, arr_0=np.zeros((0, 8, 8, 3), np.uint8))
    np.savez(three, arr_0=_imgs(3, 2, 8))
    _truncated_npz(cut, declared=8, present=5)
    np.savez(stats, mu=np.zeros(10), sigma=np.eye(10))
    cases = [
        (empty, good, ["fid"], r"empty\.npz: has 0 images; FID/sFID needs at least 2"),
        (empty, good, ["is"], r"empty\.npz: has 0 images; the Inception Score needs at least 1"),
        (three, good, ["prec"], r"three\.npz: has 3 images; precision/recall needs at least 4"),
        (cut, good, ["fid"], r"cut\.npz:arr_0: truncated"),
        (good, cut, ["fid"], r"cut\.npz:arr_0: truncated"),
        (good, three, ["prec", "rec"], r"three\.npz: reference has 3 images; precision/recall need at least 4"),
        (good, stats, ["fid"], r"stats\.npz: 'mu' has shape \(10,\), expected \(2048,\)"),
        (good, stats, ["prec"], r"stats\.npz: reference has no images"),
    ]
    for samples, ref, metrics, pattern in cases:
        net = StubNet()
        with pytest.raises(NpzFormatError, match=pattern):
            _run_eval(samples, ref, metrics, net, tmp_path)
        assert net.calls == 0, (samples.name, ref.name, metrics)
    net = StubNet(has_logits=False)  # weights without an output layer, IS asked for: refused first
    with pytest.raises(ValueError, match="no Inception Score"):
        _run_eval(good, good, ["fid", "is"], net, tmp_path)
    assert net.calls == 0


def test_both_precision_recall_modes_against_direct_computation(tmp_path):
    from mixflow_bench.metrics.precision_recall import precision_recall

    a, b = _imgs(40, 6, 8), _imgs(30, 7, 8)
    np.savez(tmp_path / "a.npz", arr_0=a)
    np.savez(tmp_path / "b.npz", arr_0=b)
    res = _run_eval(tmp_path / "a.npz", tmp_path / "b.npz", ["prec", "rec"], StubNet(), tmp_path)
    assert list(res.metrics) == ["precision", "precision_float32", "recall", "recall_float32"]
    net = StubNet()
    fa = net(torch.from_numpy(a).permute(0, 3, 1, 2)).pool
    fb = net(torch.from_numpy(b).permute(0, 3, 1, 2)).pool
    adm, exact = precision_recall(fb, fa, mode="adm"), precision_recall(fb, fa, mode="exact")
    assert (res.metrics["precision"], res.metrics["recall"]) == (adm.precision, adm.recall)
    assert (res.metrics["precision_float32"], res.metrics["recall_float32"]) == (exact.precision, exact.recall)


def test_cpu_default_batch_keeps_memory_bounded(tmp_path):
    from mixflow_bench.metrics.adm import default_batch_size

    np.savez(tmp_path / "a.npz", arr_0=_imgs(6, 8, 8))
    res = _run_eval(tmp_path / "a.npz", tmp_path / "a.npz", ["prec"], StubNet(), tmp_path)
    assert res.settings["batch_size"] <= 64  # ~10 MB of activations an image on the CPU
    assert default_batch_size("cuda", 256, 256) == 250
    assert default_batch_size("cpu", 4096, 4096) * 3 * 4096 * 4096 * 3 <= 384 << 20  # read-ahead buffers


def test_reference_bar_has_its_total_and_singular_covariance_is_one_line(tmp_path, monkeypatch):
    import mixflow_bench.metrics.adm as ev
    import mixflow_bench.progress as progress
    from mixflow_bench.metrics.frechet import GaussianStats, frechet_distance

    seen = []

    @contextmanager
    def recording_bar(label, enabled=True, total=None):
        seen.append((label, enabled, total))
        yield lambda n: None

    def small_frechet(a, b, *args, **kw):  # the real function on the first 40 dimensions (2048² is slow here)
        return frechet_distance(*(GaussianStats(s.mu[:40], s.sigma[:40, :40], s.count) for s in (a, b)), "eigh")

    monkeypatch.setattr(progress, "progress_bar", recording_bar)
    monkeypatch.setattr(ev, "frechet_distance", small_frechet)
    np.savez(tmp_path / "s.npz", arr_0=_imgs(12, 9, 8))
    np.savez(tmp_path / "r.npz", arr_0=_imgs(9, 10, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _run_eval(
            tmp_path / "s.npz", tmp_path / "r.npz", ["fid", "sfid"], StubNet(), tmp_path, show_progress=True
        )
    assert ("reference images", True, 9) in seen and ("sample images", True, 12) in seen
    leaked = [w for w in caught if issubclass(w.category, UserWarning)]
    assert not leaked, [str(w.message) for w in leaked]
    singular = [n for n in res.notes if "singular covariance" in n]
    assert [n.split(":")[0] for n in singular] == ["FID", "sFID"]  # one line each
    assert "12 samples for 40 dimensions" in singular[0]


def test_cli_refuses_wrong_kinds_of_input(tmp_path, random_weights, monkeypatch):
    import mixflow_bench.hub as hub

    fetched = []
    monkeypatch.setattr(hub, "fetch", lambda name, *a, **k: fetched.append(name) or tmp_path / "x.npz")
    good = tmp_path / "g.npz"
    np.savez(good, arr_0=_imgs(6, 1))
    folder = tmp_path / "pngs"
    folder.mkdir()
    runner = CliRunner()
    common = ["--device", "cpu", "--results-dir", str(tmp_path / "results")]

    def refused(args, *expected):
        r = runner.invoke(command, [*args, *common])
        assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.output
        for text in expected:
            assert text in " ".join(r.output.split()), r.output

    w = ["--inception-weights", str(random_weights)]
    refused(["--samples", str(good), "--ref", "sit-xl-2-256", *w], "is a checkpoint, not a reference batch")
    assert fetched == []  # no 2.7 GB download started
    # folders of images are inputs too; one without images is named in one line
    refused(["--samples", str(folder), "--ref", str(good), *w], f"{folder}: no .png/.jpg/.jpeg files")
    refused(["--samples", str(good), "--ref", str(folder), *w], f"{folder}: no .png/.jpg/.jpeg files")
    refused(["--samples", str(good), "--ref", str(good), "--inception-weights", "random"], "random weights")
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    refused(["--samples", str(good), "--ref", str(good), "--inception-weights", str(text)], "notes.txt: not Inception")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    refused(["--samples", str(good), "--ref", str(good), "--inception-weights", str(wrong)], "does not fit")
    toy = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(toy))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refused(["--samples", str(good), "--ref", str(good), "--inception-weights", str(toy)], "toy.pt: not a TF")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert not (tmp_path / "results").exists()  # nothing recorded


def test_zero_output_layer_is_refused_for_inception_score(tmp_path, random_weights):
    from mixflow_bench.metrics.inception import load_inception

    sd = torch.load(random_weights)
    sd["fc.weight"] = torch.zeros_like(sd["fc.weight"])
    zero = tmp_path / "zero-fc.pth"
    torch.save(sd, zero)
    net = load_inception(zero)
    assert "all zeros" in net.logits_problem
    good = tmp_path / "g.npz"
    np.savez(good, arr_0=_imgs(6, 1))
    net.register_forward_pre_hook(lambda *a: pytest.fail("the network ran"))
    with pytest.raises(ValueError, match="output layer is all zeros"):
        _run_eval(good, good, ["fid", "is"], net, tmp_path)


_PEAK = textwrap.dedent("""
    import atexit, runpy, sys
    def report():
        with open("/proc/self/status") as f:
            print("PEAK_KB", next(line for line in f if line.startswith("VmHWM")).split()[1], file=sys.stderr)
    atexit.register(report)
    sys.argv = ["mixflow_bench", *sys.argv[1:]]
    runpy.run_module("mixflow_bench", run_name="__main__")
""")


@pytest.mark.slow
def test_cli_defaults_peak_under_4gb_on_cpu(tmp_path, random_weights):
    """800 v 800 images at 64 px through the real network with the default batch: peak RSS of the eval process
    (its own VmHWM, so nothing of this test's process counts)."""
    repo = Path(__file__).resolve().parents[1]
    np.savez(tmp_path / "a.npz", arr_0=_imgs(800, 11, 64))
    np.savez(tmp_path / "b.npz", arr_0=_imgs(800, 12, 64))
    args = ["eval", "--samples", str(tmp_path / "a.npz"), "--ref", str(tmp_path / "b.npz"), "--device", "cpu",
            "--inception-weights", str(random_weights), "--metrics", "fid,sfid,prec,rec",
            "--results-dir", str(tmp_path / "results")]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "MIXFLOW_BENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, env=env, cwd=repo)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mb = int(out.stderr.split("PEAK_KB")[-1].split()[0]) / 1024
    print(f"eval 800 v 800 at 64 px, CPU defaults: peak RSS {peak_mb:.0f} MB")
    assert peak_mb <= 4096
