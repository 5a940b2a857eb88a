"""The metrics registry: one list of metrics and evaluators for `eval`, recipes and the pipeline; KID against
torch-fidelity; image folders, resolution warnings, damaged inputs and result records of `eval`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.cli.eval_cmd import command
from mixflow_bench.metrics import registry
from mixflow_bench.metrics.npz_stream import NpzFormatError

pytestmark = pytest.mark.timeout(120)


def _imgs(n: int, seed: int, h: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, h, 3), dtype=np.uint8)


def _mean_red(samples: Path, reference, opts) -> dict[str, float]:
    with np.load(samples) as z:
        return {"mean_red": float(z["arr_0"][..., 0].mean())}


@pytest.fixture
def mean_red(monkeypatch):
    """A trivial metric registered here only: nothing else in the project names it."""
    metric = registry.Metric("mean-red", "mean red", ("mean_red",), compute=_mean_red)
    monkeypatch.setitem(registry.METRICS, metric.name, metric)
    return metric


def _eval(tmp_path, *args):
    return CliRunner().invoke(command, [*args, "--device", "cpu", "--results-dir", str(tmp_path / "results")])


def test_a_metric_registered_in_a_test_reaches_the_cli_the_recipe_and_the_pipeline(tmp_path, mean_red):
    from mixflow_bench.pipeline.tasks import eval_task
    from mixflow_bench.recipes.loader import load_recipe

    imgs = _imgs(5, 0)
    np.savez(tmp_path / "s.npz", arr_0=imgs)
    res = _eval(tmp_path, "--samples", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "s.npz"), "--metrics",
                "mean-red", "--json", str(tmp_path / "out.json"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out.json").read_text())["metrics"] == {"mean_red": float(imgs[..., 0].mean())}
    recipe = load_recipe("tiny-digits", {"eval": {"metrics": ["mean-red"], "reference": str(tmp_path / "s.npz")}})
    assert recipe.eval.metrics == ["mean-red"]
    values = eval_task(str(tmp_path / "s.npz"), str(tmp_path / "s.npz"), ["mean-red"], str(tmp_path / "e.json"))
    assert values == {"mean_red": float(imgs[..., 0].mean())}


def test_unknown_metrics_and_evaluators_are_refused_in_one_line_everywhere(tmp_path):
    from mixflow_bench.recipes.loader import load_recipe
    from mixflow_bench.recipes.validate import RecipeError

    np.savez(tmp_path / "s.npz", arr_0=_imgs(5, 0))
    s = str(tmp_path / "s.npz")
    res = _eval(tmp_path, "--samples", s, "--ref", s, "--metrics", "mean-red")
    assert res.exit_code == 2 and "unknown metric 'mean-red'" in res.output and "Traceback" not in res.output
    with pytest.raises(RecipeError, match=r"eval\.metrics: unknown metric 'mean-red'"):
        load_recipe("tiny-digits", {"eval": {"metrics": ["mean-red"]}})
    with pytest.raises(RecipeError, match="the torchmetrics evaluator does not compute sfid"):
        load_recipe("tiny-digits", {"eval": {"metrics": ["fid", "sfid"], "evaluator": "torchmetrics"}})
    res = _eval(tmp_path, "--samples", s, "--ref", s, "--evaluator", "tf")
    assert res.exit_code == 2 and "unknown evaluator 'tf'" in res.output


def test_every_metric_is_reachable_from_recipes_and_the_cli_with_each_evaluator_that_computes_it():
    from mixflow_bench.recipes.loader import load_recipe

    assert {"fid", "sfid", "is", "prec", "rec", "kid", "fd-dinov2", "fd-data"} <= set(registry.METRICS)
    assert set(registry.EVALUATORS) == {"adm", "torchmetrics"}
    for name, metric in registry.METRICS.items():
        for ev in metric.evaluators or registry.EVALUATORS:
            assert registry.check_metrics([name], ev) == (name,)
            r = load_recipe("tiny-digits", {"eval": {"metrics": [name], "evaluator": ev, "reference": "r.npz"}})
            assert r.eval.metrics == [name]
    # FD-DINOv2 beside FID in a recipe (it was refused), and the weights it fetches by default
    r = load_recipe("tiny-digits", {"eval": {"metrics": ["fid", "fd-dinov2"], "reference": "r.npz"}})
    assert registry.artifacts_for(r.eval.metrics) == ["inception-torch-fidelity", "dinov2-vit-l"]
    assert registry.artifacts_for(["kid"], inception_weights="w.pth") == []


def test_kid_is_torch_fidelitys():
    """Same subsets (RandomState(2020)), same kernel and estimator as torch-fidelity's own function; features in
    float64 on both sides, so the bound is float64 summation-order rounding (1e-12 relative)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    from mixflow_bench.metrics.kid import kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 24)), rng.normal(size=(45, 24)) * 1.2 + 0.1
    want = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=9, kid_subset_size=30,
                                  kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                  kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)  # fmt: skip
    got = kid(a, b, subsets=9, subset_size=30)
    assert got.mean == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-12)
    assert got.std == pytest.approx(want["kernel_inception_distance_std"], rel=1e-12)


class StubNet(torch.nn.Module):
    """A cheap stand-in for the Inception network (features from pixel statistics) that counts its images."""

    weights_id = "stub"
    has_logits = True

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def forward(self, x, spatial=True, logits=True):
        from mixflow_bench.metrics.inception import InceptionOutputs

        self.images += x.shape[0]
        f = x.float()
        feats = torch.cat([f.mean((2, 3)), f.std((2, 3)), f.amax((2, 3))], 1)
        pool = feats.repeat(1, 2048 // feats.shape[1] + 1)[:, :2048]
        return InceptionOutputs(pool=pool, spatial=pool[:, :2023], logits=pool[:, :1008] if logits else None)


def _png_folder(folder: Path, images: np.ndarray, fmt: str = "png") -> Path:
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.{fmt}")
    return folder


def test_image_folders_evaluate_like_their_npz_and_the_reference_is_packed_once(tmp_path):
    smp, ref = _imgs(6, 1), _imgs(7, 2)
    np.savez(tmp_path / "s.npz", arr_0=smp)
    np.savez(tmp_path / "r.npz", arr_0=ref)
    sdir, rdir = _png_folder(tmp_path / "s", smp), _png_folder(tmp_path / "r", ref)
    kw = dict(metrics=["kid", "prec", "rec"], device="cpu", show_progress=False, cache_dir=tmp_path / "c")
    npz_kw = {**kw, "cache_dir": tmp_path / "npz-cache"}
    want = registry.evaluate(tmp_path / "s.npz", tmp_path / "r.npz", net=StubNet(), **npz_kw).metrics
    net = StubNet()
    got = registry.evaluate(sdir, rdir, net=net, **kw).metrics
    assert got == want and net.images == 13
    packed = list((tmp_path / "c" / "folders").glob("*.npz"))
    assert len(packed) == 1
    stamp = packed[0].stat().st_mtime_ns
    net = StubNet()
    assert registry.evaluate(sdir, rdir, net=net, **kw).metrics == want
    assert net.images == 6  # the reference statistics came from the cache, keyed by the folder's content
    assert packed[0].stat().st_mtime_ns == stamp and not list((tmp_path / "c").glob("samples-*"))


def test_resolution_mismatch_is_a_warning(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=_imgs(6, 1, 8))
    np.savez(tmp_path / "r.npz", arr_0=_imgs(6, 2, 32))
    seen: list[str] = []
    res = registry.evaluate(tmp_path / "s.npz", tmp_path / "r.npz", ["kid"], net=StubNet(), device="cpu",
                            show_progress=False, cache_dir=tmp_path / "c", warn=seen.append)  # fmt: skip
    assert len(seen) == 1 and "samples are 8×8 but the reference images are 32×32" in seen[0]
    assert seen[0] in res.notes


def _damaged_npz(path: Path, images: np.ndarray) -> None:
    np.savez(path, arr_0=images)  # stored, not compressed: flip one byte of image data
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("arr_0.npy")
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 200] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_damaged_data_and_empty_images_fail_before_the_network_in_one_line(tmp_path):
    good, bad, small, flat = (tmp_path / f"{n}.npz" for n in ("good", "bad", "small", "flat"))
    np.savez(good, arr_0=_imgs(6, 1, 32))
    _damaged_npz(bad, _imgs(6, 2, 32))  # the flipped byte is past what reading the header touches
    _damaged_npz(small, _imgs(6, 2, 8))  # the whole member is read with the header
    np.savez(flat, arr_0=np.zeros((4, 0, 0, 3), np.uint8))
    for samples, ref, pattern in ((bad, good, r"bad\.npz: damaged data in 'arr_0\.npy' \(Bad CRC-32"),
                                  (good, bad, r"bad\.npz: damaged data in 'arr_0\.npy' \(Bad CRC-32"),
                                  (small, good, r"small\.npz: damaged data \(Bad CRC-32 for file 'arr_0\.npy'\)"),
                                  (flat, good, r"flat\.npz:arr_0: images of size 0×0")):  # fmt: skip
        net = StubNet()
        with pytest.raises(NpzFormatError, match=pattern):
            registry.evaluate(samples, ref, ["fid", "prec"], net=net, device="cpu", show_progress=False,
                              cache_dir=tmp_path / "c")  # fmt: skip
        assert net.images == 0


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, monkeypatch):
    np.savez(tmp_path / "s.npz", arr_0=_imgs(5, 0))
    monkeypatch.setattr(registry, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the outputs"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = str(tmp_path / "s.npz")
    res = _eval(tmp_path, "--samples", s, "--ref", s, "--metrics", "fid", "--json", str(blocker / "r.json"))
    assert res.exit_code == 1 and "--json" in res.output and "is a file, not a folder" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(command, ["--samples", s, "--ref", s, "--metrics", "fid", "--results-dir", str(blocker)])
    assert res.exit_code == 1 and "--results-dir" in res.output and "Traceback" not in res.output


def test_records_of_other_metric_sets_do_not_replace_each_other(tmp_path, mean_red, monkeypatch):
    from mixflow_bench.results.records import load_records

    metric = registry.Metric("mean-green", "mean green", ("mean_green",),
                             compute=lambda s, r, o: {"mean_green": float(np.load(s)["arr_0"][..., 1].mean())})
    monkeypatch.setitem(registry.METRICS, metric.name, metric)
    np.savez(tmp_path / "s.npz", arr_0=_imgs(5, 0))
    np.savez(tmp_path / "r.npz", arr_0=_imgs(5, 1))
    s, r = str(tmp_path / "s.npz"), str(tmp_path / "r.npz")
    for args in (["--metrics", "mean-red"], ["--metrics", "mean-green"], ["--metrics", "mean-red", "--ref", s]):
        res = _eval(tmp_path, "--samples", s, "--ref", r, *args)
        assert res.exit_code == 0, res.output
    records = load_records(tmp_path / "results")
    assert sorted(tuple(rec["metrics"]) for rec in records) == [("mean_green",), ("mean_red",), ("mean_red",)]
    assert len({rec["name"] for rec in records}) == 3


def test_pack_reads_png_and_jpeg_and_names_bad_files(tmp_path):
    from mixflow_bench.cli.pack_cmd import command as pack

    imgs = _imgs(3, 0)
    imgs[2] = np.linspace(0, 255, 8 * 8 * 3).reshape(8, 8, 3).astype(np.uint8)  # smooth: JPEG keeps it closely
    folder = _png_folder(tmp_path / "imgs", imgs[:2])
    from PIL import Image

    Image.fromarray(imgs[2]).save(folder / "002.jpg", quality=100)
    res = CliRunner().invoke(pack, [str(folder), str(tmp_path / "out.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "out.npz") as z:
        packed = z["arr_0"]
    assert packed.shape == (3, 8, 8, 3) and np.array_equal(packed[:2], imgs[:2])
    assert np.abs(packed[2].astype(int) - imgs[2]).mean() < 8  # the third image is the (lossy) JPEG
    full = (folder / "000.png").read_bytes()
    for name, data in (("003.png", full[: len(full) // 2]), ("004.png", b"not an image at all")):
        (folder / name).write_bytes(data)
        res = CliRunner().invoke(pack, [str(folder), str(tmp_path / "bad.npz")])
        assert res.exit_code == 1 and f"{name}: not a readable PNG/JPEG image" in res.output, res.output
        assert "Traceback" not in res.output and not (tmp_path / "bad.npz").exists()
        (folder / name).unlink()


def test_clean_resize_is_pils_antialiased_bicubic_and_has_its_own_protocol(tmp_path):
    """clean-fid's resize against torch's antialiased bicubic (the same a = -0.5 kernel as PIL's): they agree to
    float32 rounding of values of size 255, far from the TF1 bilinear that ADM's protocol uses."""
    from mixflow_bench.metrics.resize import resize_bilinear_tf1, resize_clean

    x = torch.from_numpy(_imgs(2, 3, 64)).permute(0, 3, 1, 2).float()
    for size in ((299, 299), (40, 40)):
        ours = resize_clean(x, size)
        torch_pil = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(0, 255)
        assert float((ours - torch_pil).abs().max()) <= 2e-3 * 255
    assert float((resize_clean(x) - resize_bilinear_tf1(x)).abs().max()) > 1.0
    np.savez(tmp_path / "s.npz", arr_0=_imgs(6, 1))
    res = registry.evaluate(tmp_path / "s.npz", tmp_path / "s.npz", ["kid"], net=StubNet(), resize="clean",
                            device="cpu", show_progress=False, cache_dir=tmp_path / "c")  # fmt: skip
    assert "clean-fid" in res.settings["resize"] and any("different protocol" in n for n in res.notes)


def test_readme_evaluation_example_runs(tmp_path, monkeypatch):
    import re

    from mixflow_bench.metrics import adm

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Evaluation in a few lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(adm, "load_inception", lambda weights=None, device="cpu": StubNet())  # no download
    real_fd = adm.frechet_distance

    def small_fd(a, b, *args, **kw):  # the real function on 40 of the 2048 dimensions (2048² is slow here)
        from mixflow_bench.metrics.frechet import GaussianStats

        cut = [GaussianStats(s.mu[:40], s.sigma[:40, :40], s.count) for s in (a, b)]
        return real_fd(*cut, *args, **kw)

    monkeypatch.setattr(adm, "frechet_distance", small_fd)
    monkeypatch.setenv("MIXFLOW_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert set(scope["result"].metrics) >= {"fid", "kid", "precision", "recall"}


def test_clean_resize_recipes_get_their_own_protocol_label():
    from mixflow_bench.results.protocol import evaluator_of

    assert evaluator_of(["fid"], {"evaluator": "adm", "resize": "clean"}) == "adm-clean-resize"
    assert evaluator_of(["fid"], {"evaluator": "adm", "resize": "tf1"}) == "adm"
