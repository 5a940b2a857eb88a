"""Training-set reference npz of the κ-FC recipes: the CIFAR-10 archive parser, folders, the hub download of the
archive from a real HTTP server on 127.0.0.1, and `mixflow-bench data prepare --reference` through the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mixflow_bench.cli.main import cli
from mixflow_bench.data.cifar_archive import CifarArchiveError, read_cifar10_train
from mixflow_bench.data.reference_images import ReferenceMissingError, cifar10_reference, ensure_reference
from mixflow_bench.hub import IntegrityError, fetch
from mixflow_bench.hub.testserver import FaultyServer, ServedFile
from mixflow_bench.recipes.loader import list_recipes, load_recipe

pytestmark = pytest.mark.timeout(60)

PER_BATCH = 3


def write_archive(path: Path, *, str_keys: bool = False, drop: str | None = None, seed: int = 0) -> np.ndarray:
    """A small archive in the official layout; returns the expected N×32×32×3 training images (batch order)."""
    rng = np.random.default_rng(seed)
    expected = []
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            if name == drop:
                continue
            if name == "batches.meta":
                obj = {b"label_names": [b"airplane"]}
            else:
                hwc = rng.integers(0, 256, (PER_BATCH, 32, 32, 3), dtype=np.uint8)
                rows = hwc.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)  # R plane, G plane, B plane, rows first
                labels = rng.integers(0, 10, PER_BATCH).tolist()
                obj = {b"batch_label": b"x", b"labels": labels, b"data": rows, b"filenames": [b"a.png"] * 3}
                if str_keys:
                    obj = {k.decode(): v for k, v in obj.items()}
                if name.startswith("data_batch"):
                    expected.append(hwc)
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return np.concatenate(expected)


@pytest.mark.parametrize("str_keys", [False, True])
def test_archive_parser_returns_training_images_in_order(tmp_path, str_keys):
    archive = tmp_path / "cifar-10-python.tar.gz"
    expected = write_archive(archive, str_keys=str_keys)
    images, labels = read_cifar10_train(archive)
    assert images.dtype == np.uint8 and images.shape == (5 * PER_BATCH, 32, 32, 3)
    np.testing.assert_array_equal(images, expected)
    assert labels.shape == (5 * PER_BATCH,)
    # one pixel by hand: the first image's green value at row 2, column 5 is byte 1024 + 2 * 32 + 5 of its row
    with tarfile.open(archive) as tar:
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    row = batch["data" if str_keys else b"data"][0]
    assert images[0, 2, 5, 1] == row[1024 + 2 * 32 + 5]


def test_reference_npz_equals_the_images(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    expected = write_archive(archive, seed=3)
    path, n = cifar10_reference(archive, tmp_path / "ref" / "cifar10-train-32.npz")
    assert n == len(expected)
    with np.load(path) as data:
        assert list(data.files) == ["arr_0"]
        np.testing.assert_array_equal(data["arr_0"], expected)


def test_damaged_or_foreign_archives_are_one_line_errors(tmp_path):
    missing = tmp_path / "a.tar.gz"
    write_archive(missing, drop="data_batch_4")
    with pytest.raises(CifarArchiveError, match="data_batch_4"):
        read_cifar10_train(missing)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(CifarArchiveError, match="not a readable tar archive"):
        read_cifar10_train(junk)


def test_folder_reference_keeps_64px_and_resizes_others_with_lanczos(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "afhq"
    kept = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    for cls, name, img in (("cat", "b.png", kept), ("dog", "a.jpg", None), ("cat", "c.png", big)):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        if img is None:
            Image.fromarray(kept).save(folder / cls / name, quality=95)
        else:
            Image.fromarray(img).save(folder / cls / name)
    recipe = load_recipe("mixed-source-afhqv2-64-euler10", {"eval": {"reference": str(tmp_path / "ref.npz")}})
    with pytest.raises(ReferenceMissingError, match="data prepare --reference --recipe mixed-source-afhqv2-64"):
        ensure_reference(recipe.eval, recipe.name)
    result = CliRunner().invoke(
        cli, ["data", "prepare", "--reference", "--recipe", "mixed-source-afhqv2-64-euler10", "--source",
              str(folder), "--out", str(tmp_path / "ref.npz"), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1 and "has 3 images; the reference takes the first 10000" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "ref.npz").exists()
    result = CliRunner().invoke(
        cli, ["data", "prepare", "--reference", "--recipe", "mixed-source-afhqv2-64-euler10", "--source",
              str(folder), "--out", str(tmp_path / "ref.npz"), "--no-progress", "--limit", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "ref.npz") as data:
        arr = data["arr_0"]
    assert arr.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(arr[0], kept)  # cat/b.png, already 64x64: untouched
    want = np.asarray(Image.fromarray(big).resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(arr[1], want)  # cat/c.png
    with Image.open(folder / "dog" / "a.jpg") as im:
        np.testing.assert_array_equal(arr[2], np.asarray(im.convert("RGB")))


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXFLOW_BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("MIXFLOW_BENCH_DOWNLOAD_BACKOFF", "0.01")
    with FaultyServer() as srv:
        yield srv


def register(monkeypatch, tmp_path, entries):
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("MIXFLOW_BENCH_REGISTRY_OVERRIDES", str(path))


def test_cifar_archive_downloads_verified_and_bad_bytes_fail(served, tmp_path, monkeypatch):
    archive = tmp_path / "served.tar.gz"
    write_archive(archive, seed=4)
    data = archive.read_bytes()
    served.files["/cifar-10-python.tar.gz"] = ServedFile(data)
    entry = {"urls": [served.url("/cifar-10-python.tar.gz")], "sha256": hashlib.sha256(data).hexdigest()}
    register(monkeypatch, tmp_path, {"cifar10-python": entry})
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    served.files["/cifar-10-python.tar.gz"].data = bytes(bad)
    with pytest.raises(IntegrityError, match="sha256"):
        fetch("cifar10-python", progress=False)
    served.files["/cifar-10-python.tar.gz"].data = data
    path = fetch("cifar10-python", progress=False)
    assert path.read_bytes() == data and path.name == "cifar-10-python.tar.gz"


def test_download_recipe_then_data_prepare_through_the_cli(served, tmp_path, monkeypatch):
    archive = tmp_path / "served.tar.gz"
    expected = write_archive(archive, seed=5)
    data = archive.read_bytes()
    served.files["/c.tgz"] = ServedFile(data)
    weights = b"inception stand-in"
    served.files["/w.pth"] = ServedFile(weights)
    register(monkeypatch, tmp_path, {
        "cifar10-python": {"urls": [served.url("/c.tgz")], "sha256": hashlib.sha256(data).hexdigest()},
        "inception-torch-fidelity": {"urls": [served.url("/w.pth")], "check": "none",
                                     "sha256_prefix": hashlib.sha256(weights).hexdigest()[:8]},
        "mixed-source-cifar10": {"urls": [served.url("/missing")], "check": "none"},
    })  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(cli, ["download", "cifar10-python", "inception-torch-fidelity", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "cifar10-train-32.npz"
    result = runner.invoke(
        cli, ["data", "prepare", "--reference", "--recipe", "mixed-source-cifar10-heun5", "--out", str(out),
              "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["arr_0"], expected)
    # the archive path itself works too; bad input is one line, no traceback
    result = runner.invoke(cli, ["data", "prepare", "--reference", "--source", str(archive), "--out",
                                 str(tmp_path / "b.npz"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"junk")
    result = runner.invoke(cli, ["data", "prepare", "--reference", "--source", str(junk), "--out",
                                 str(tmp_path / "c.npz"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a readable tar archive" in result.output and not (tmp_path / "c.npz").exists()


def test_inception_weights_prefix_mismatch_is_refused(served, tmp_path, monkeypatch):
    served.files["/w.pth"] = ServedFile(b"some other file")
    register(monkeypatch, tmp_path, {"inception-torch-fidelity": {"urls": [served.url("/w.pth")], "check": "none"}})
    with pytest.raises(IntegrityError, match="6726825d"):
        fetch("inception-torch-fidelity", progress=False)


def test_recipe_download_list_includes_the_archive():
    from mixflow_bench.recipes.artifacts import artifacts_for_recipe

    names = artifacts_for_recipe(load_recipe("mixed-source-cifar10-heun5").to_dict())
    assert {"cifar10-python", "inception-torch-fidelity", "mixed-source-cifar10"} <= set(names)


def test_ffhq_and_afhq_references_are_the_first_10000_images_of_the_sorted_listing(tmp_path):
    """The official FID-10K compares with the first 10,000 images as the loader lists them (class folders, then
    files; no shuffling): the recipes say so, and the reference takes exactly the first ``limit`` in that order."""
    from mixflow_bench.data.reference_images import build_reference
    from mixflow_bench.results.protocol import protocol_of

    for name in list_recipes():
        if name.startswith(("mixed-source-ffhq-64", "mixed-source-afhqv2-64")):
            recipe = load_recipe(name)
            assert recipe.eval.reference_data.limit == 10_000, name
            assert protocol_of(recipe.sample, recipe.eval.metrics, recipe.model.name,
                               dataclasses.asdict(recipe.eval))["reference_size"] == 10_000  # fmt: skip
    folder = tmp_path / "ffhq"
    for i in range(5):  # the dataset_tool layout, written in scrambled order
        index = (3 * i) % 5
        sub = folder / f"{index // 2:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 40 * index, dtype=np.uint8)).save(sub / f"img{index:08d}.png")
    recipe = load_recipe("mixed-source-ffhq-64-euler4", {"eval": {"reference": str(tmp_path / "r.npz"),
                                                                  "reference_data": {"limit": 3}}})  # fmt: skip
    path, n = build_reference(recipe.eval, recipe.name, folder)
    with np.load(path) as data:
        assert n == 3 and [int(im[0, 0, 0]) for im in data["arr_0"]] == [0, 40, 80]  # images 0, 1, 2
