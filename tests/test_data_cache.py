"""Sources, latent-cache preparation, integrity checks and resume after a killed ``prepare``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_data_preprocess import reference_center_crop
from test_data_stub_codec import StubCodec, write_image_tree

from mixflow_bench.cli.data_cmd import command as data_cli
from mixflow_bench.data import (
    LatentDataset,
    PrepareSettings,
    finalize_manifest,
    open_source,
    prepare_shards,
    rank_from_env,
    shards_for_rank,
    verify_cache,
)
from mixflow_bench.data.prepare import CorruptImageError

RES = 32
ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imgs") / "train"
    write_image_tree(root)
    return root


def _prepare(src, out, shard_size=4, flips=2, rank=0, world=1, codec=None, **kw):
    settings = PrepareSettings("stub", RES, shard_size, flips)
    prepare_shards(
        open_source(src) if not hasattr(src, "records") else src,
        codec or StubCodec(RES),
        str(out),
        settings,
        rank=rank,
        world_size=world,
        show_progress=False,
        **kw,
    )
    return finalize_manifest(str(out))


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_label_order_matches_torchvision_imagefolder(tree: Path) -> None:
    from torchvision.datasets import ImageFolder

    ref = ImageFolder(str(tree))
    src = open_source(tree)
    assert src.classes == ref.classes == ["n01", "n02", "n10"]
    got = [(os.path.join(str(tree), r.key), r.label) for r in src.records]
    assert got == [(p, y) for p, y in ref.samples]


def test_cache_content_against_independent_crop_and_encode(tree: Path, tmp_path: Path) -> None:
    m = _prepare(tree, tmp_path / "c")
    codec = StubCodec(RES)
    valid = [r for r in open_source(tree).records if "broken" not in r.key]
    assert m["num_samples"] == len(valid) == 9 and m["num_shards"] == 3
    assert [s["origin"] for s in m["skipped"]] == [str(tree / "n02" / "broken.jpg")]
    assert m["classes"] == ["n01", "n02", "n10"] and m["latent_shape"] == [4, 4, 4]
    ds = LatentDataset(tmp_path / "c")
    np.testing.assert_array_equal(ds.labels, [r.label for r in valid])
    for i, rec in enumerate(valid):
        crop = reference_center_crop(Image.open(tree / rec.key).convert("RGB"), RES)
        x = torch.from_numpy(np.stack([crop, crop[:, ::-1]]).copy()).permute(0, 3, 1, 2).float() / 255
        want = codec.encode(x)
        fields, label = ds[i]
        assert label == rec.label
        for k in ("mean", "std"):  # orientation 0 = original, 1 = mirrored
            np.testing.assert_allclose(fields[k], want[k].numpy(), rtol=1e-5, atol=1e-6)


def test_corrupt_image_refused_with_path(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        _prepare(tree, tmp_path / "e", on_corrupt="error")
    res = CliRunner().invoke(
        data_cli,
        [
            "prepare",
            "--source",
            str(tree),
            "--encoder",
            "test_data_stub_codec:make_codec",
            "--resolution",
            str(RES),
            "--out",
            str(tmp_path / "f"),
            "--on-corrupt",
            "error",
            "--no-progress",
        ],
    )
    assert res.exit_code != 0 and str(tree / "n02" / "broken.jpg") in res.output


def test_verify_catches_flipped_byte_and_missing_shard(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    _prepare(tree, out)
    runner = CliRunner()
    assert runner.invoke(data_cli, ["verify", str(out)]).exit_code == 0
    victim = out / "shard-00001.mean.npy"
    data = bytearray(victim.read_bytes())
    data[-7] ^= 0x01
    victim.write_bytes(bytes(data))
    rep = verify_cache(out)
    assert not rep.ok and any("shard-00001.mean.npy" in p and "sha256" in p for p in rep.problems)
    res = runner.invoke(data_cli, ["verify", str(out)])
    assert res.exit_code == 1 and "shard-00001.mean.npy" in res.output
    (out / "shard-00002.labels.npy").unlink()
    rep = verify_cache(out)
    assert any("shard-00002.labels.npy" in p and "missing" in p for p in rep.problems)


def test_tar_sources_equal_folder_source(tree: Path, tmp_path: Path) -> None:
    folder = open_source(tree)
    recs = list(folder.records)
    tpath = tmp_path / "shards"
    tpath.mkdir()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(recs))  # members in scrambled order across two tars
    for part, sel in enumerate(np.array_split(order, 2)):
        with tarfile.open(tpath / f"train-{part}.tar", "w") as tf:
            for i in sel:
                tf.add(tree / recs[i].key, arcname=recs[i].key)
    tars = open_source(tpath)
    assert tars.kind == "tar" and tars.classes == folder.classes
    assert [(r.key, r.label, r.read()) for r in tars.records] == [(r.key, r.label, r.read()) for r in recs]
    a, b = _prepare(tree, tmp_path / "a"), _prepare(tpath, tmp_path / "b")
    for sa, sb in zip(a["shards"], b["shards"]):
        assert {k: v["sha256"] for k, v in sa["files"].items()} == {
            k: v["sha256"] for k, v in sb["files"].items()
        }
    # WebDataset layout: <key>.jpg + <key>.cls holding the integer label
    with tarfile.open(tmp_path / "wds.tar", "w") as tf:
        for j, r in enumerate(recs):
            ext = os.path.splitext(r.key)[1]
            tf.add(tree / r.key, arcname=f"{j:06d}{ext}")
            cls = tmp_path / f"{j}.cls"
            cls.write_text(f"{r.label}\n")
            tf.add(cls, arcname=f"{j:06d}.cls")
    wds = open_source(tmp_path / "wds.tar")
    assert [(r.label, r.read()) for r in wds.records] == [(r.label, r.read()) for r in recs]


def test_rank_assignment_and_multi_rank_prepare(tree: Path, tmp_path: Path) -> None:
    assert rank_from_env({"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert rank_from_env(
        {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "2"}
    ) == (3, 4)
    assert rank_from_env({}) == (0, 1)
    parts = [shards_for_rank(10, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]
    single = _prepare(tree, tmp_path / "one", shard_size=2)
    assert _prepare(tree, tmp_path / "two", shard_size=2, rank=1, world=2) is None  # rank 0's shards missing
    assert not (tmp_path / "two" / "manifest.json").exists()
    multi = _prepare(tree, tmp_path / "two", shard_size=2, rank=0, world=2)
    assert multi["shards"] == single["shards"]


def test_settings_mismatch_refused(tree: Path, tmp_path: Path) -> None:
    _prepare(tree, tmp_path / "s", shard_size=4)
    with pytest.raises(ValueError, match="shard_size"):
        _prepare(tree, tmp_path / "s", shard_size=5)


def _cli_prepare(src: Path, out: Path, delay: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}", STUB_DELAY=delay, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "mixflow_bench",
        "data",
        "prepare",
        "--source",
        str(src),
        "--encoder",
        "test_data_stub_codec:make_codec",
        "--resolution",
        str(RES),
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--batch-size",
        "1",
        "--no-progress",
        "--workers",
        "1",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_resume_after_kill_is_byte_identical(tree: Path, tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = _cli_prepare(tree, full, "0")
    assert p.wait(timeout=120) == 0, p.stdout.read().decode()
    p = _cli_prepare(tree, cut, "0.4")
    deadline = time.time() + 90
    while not (cut / "shard-00001.json").exists():  # two shards done, a third in flight
        assert p.poll() is None and time.time() < deadline, "prepare ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (cut / "manifest.json").exists()
    assert not (cut / "shard-00004.json").exists()
    p = _cli_prepare(tree, cut, "0")
    out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 0, out
    a, b = _files(full), _files(cut)
    assert sorted(a) == sorted(b)
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert verify_cache(cut).ok


def test_rae_style_fields_float16_single_orientation(tree: Path, tmp_path: Path) -> None:
    from test_data_stub_codec import StubCodec as Stub

    from mixflow_bench.data import LatentBatches

    codec = Stub(RES, "rae")
    settings = PrepareSettings("stub-rae", RES, 5, flips=1, dtype="float16")
    prepare_shards(open_source(tree), codec, str(tmp_path / "r"), settings, show_progress=False)
    m = finalize_manifest(str(tmp_path / "r"))
    assert m["fields"] == {"latent": {"shape": [8, 2, 2], "dtype": "float16"}} and m["flips"] == 1
    assert verify_cache(tmp_path / "r").ok
    ds = LatentDataset(tmp_path / "r")
    rec = [r for r in open_source(tree).records if "broken" not in r.key][4]
    crop = reference_center_crop(Image.open(tree / rec.key).convert("RGB"), RES)
    want = codec.encode(torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255)["latent"][0]
    np.testing.assert_array_equal(ds[4][0]["latent"][0], want.numpy().astype(np.float16))
    with pytest.raises(ValueError, match="only the original orientation"):
        LatentBatches(ds, 3, seed=0, hflip=True)
    b = LatentBatches(ds, 3, seed=0, codec=codec, prefetch=0)
    x, _ = next(iter(b))
    idx = b.sampler.global_batch(0, 0)
    assert torch.equal(
        x, torch.from_numpy(np.stack([ds[int(i)][0]["latent"][0] for i in idx]).astype(np.float32))
    )
