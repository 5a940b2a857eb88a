"""Streaming npz reading/writing, refusals of bad inputs, `pack`, and the memory bound of streaming."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mixflow_bench.metrics.npz_stream import NpzFormatError, NpzImageReader, NpzImageWriter

REPO = Path(__file__).resolve().parents[1]


def _images(n: int, h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _read_all(path: Path, batch: int) -> np.ndarray:
    with NpzImageReader(path) as r:
        return np.concatenate(list(r.iter_batches(batch)))


@pytest.mark.parametrize("writer", ["savez", "savez_compressed", "format2", "ours"])
def test_reader_round_trips(tmp_path, writer):
    imgs = _images(23)
    path = tmp_path / "x.npz"
    if writer == "savez":
        np.savez(path, arr_0=imgs)
    elif writer == "savez_compressed":
        np.savez_compressed(path, arr_0=imgs, arr_1=np.arange(23))  # deflated member, plus labels
    elif writer == "format2":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("arr_0.npy", "w") as f:
            np.lib.format.write_array(f, imgs, version=(2, 0))
    else:
        w = NpzImageWriter(path, 23, 6, 5)
        w.write(imgs[:10])
        w.write(imgs[10:])
        w.close()
        np.testing.assert_array_equal(np.load(path)["arr_0"], imgs)  # numpy reads what we write
    for batch in (1, 4, 23, 100):
        np.testing.assert_array_equal(_read_all(path, batch), imgs)


def test_refusals(tmp_path):
    cases = {
        "float.npz": (dict(arr_0=_images(3).astype(np.float32)), "not uint8"),
        "nchw.npz": (dict(arr_0=_images(3).transpose(0, 3, 1, 2).copy()), "N×H×W×3"),
        "gray.npz": (dict(arr_0=_images(3)[..., 0]), "N×H×W×3"),
        "nokey.npz": (dict(images=_images(3)), "no 'arr_0'"),
        "mixed.npz": (dict(arr_0=_images(3), arr_1=_images(2, 8, 8)), "several image arrays"),
        "fortran.npz": (dict(arr_0=np.asfortranarray(_images(3))), "Fortran"),
    }
    for name, (arrays, msg) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(NpzFormatError, match=msg):
            NpzImageReader(tmp_path / name)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(NpzFormatError, match="not an npz"):
        NpzImageReader(tmp_path / "text.npz")
    np.save(tmp_path / "plain.npy", _images(2))
    with pytest.raises(NpzFormatError, match="not an npz"):
        NpzImageReader(tmp_path / "plain.npy")


def _truncated_npz(path: Path, declared: int, present: int, h: int = 4, w: int = 4) -> None:
    """An npz whose arr_0 header declares ``declared`` images but whose data holds ``present``."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (declared, h, w, 3)}
    with zipfile.ZipFile(path, "w") as z, z.open("arr_0.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(_images(present, h, w).tobytes())


def test_truncated_array_and_folder_are_refused_up_front_naming_the_file(tmp_path):
    _truncated_npz(tmp_path / "cut.npz", declared=10, present=6)
    with pytest.raises(NpzFormatError, match=r"cut\.npz.*truncated.*declares 10 images.*6 whole images"):
        NpzImageReader(tmp_path / "cut.npz")  # at opening, before any batch is read
    folder = tmp_path / "pngs"
    folder.mkdir()
    with pytest.raises(NpzFormatError, match=r"is a folder.*mixflow-bench pack .*pngs"):
        NpzImageReader(folder)


def test_writer_is_atomic_and_refuses_short_files(tmp_path):
    out = tmp_path / "o.npz"
    w = NpzImageWriter(out, 5, 4, 4)
    w.write(_images(3, 4, 4))
    with pytest.raises(NpzFormatError, match="declared 5"):
        w.close()
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_pack_folder_sorted_and_refuses_mixed_sizes(tmp_path):
    from PIL import Image

    from mixflow_bench.metrics.pack import pack_folder

    imgs = _images(5, 8, 6, seed=3)
    src = tmp_path / "png"
    src.mkdir()
    order = [3, 0, 4, 1, 2]  # written in scrambled order; names sort to 0..4
    for i in order:
        Image.fromarray(imgs[i]).save(src / f"{i:06d}.png")
    pack_folder(src, tmp_path / "s.npz", batch=2)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["arr_0"], imgs)
    Image.fromarray(_images(1, 9, 6)[0]).save(src / "000099.png")
    with pytest.raises(NpzFormatError, match="differs"):
        pack_folder(src, tmp_path / "t.npz")
    assert not (tmp_path / "t.npz").exists()


def test_pack_cli(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from mixflow_bench.cli.pack_cmd import command

    imgs = _images(3, 4, 4, seed=5)
    for i in range(3):
        Image.fromarray(imgs[i]).save(tmp_path / f"{i}.png")
    res = CliRunner().invoke(command, [str(tmp_path), str(tmp_path / "o.npz")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["arr_0"], imgs)


# Peak RSS of the measuring process itself: /proc's VmHWM, reset between phases through clear_refs. getrusage's
# ru_maxrss is not used: after fork/exec it carries the parent's (pytest's) high-water mark into the child.
_MEASURE = textwrap.dedent("""
    import contextlib, json, sys
    import numpy as np, torch
    from mixflow_bench.metrics.npz_stream import NpzImageReader
    from mixflow_bench.metrics.features import extract
    from mixflow_bench.metrics.inception import InceptionOutputs

    def peak_kb():
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM")).split()[1])

    def reset_peak():
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    class Stub(torch.nn.Module):
        has_logits = True
        def forward(self, x, spatial=True, logits=True):
            f = x.float().mean((2, 3))
            pool = torch.cat([f, f.square()], 1)
            return InceptionOutputs(pool=pool, spatial=pool, logits=pool)

    base = peak_kb()
    reset_peak()
    start_read = peak_kb()
    total = 0
    with NpzImageReader(sys.argv[1]) as r:
        for b in r.iter_batches(64):
            total += int(b.sum(dtype=np.int64))
    after_read = peak_kb()
    reset_peak()
    start_extract = peak_kb()
    with NpzImageReader(sys.argv[1]) as r:
        s = extract(r, Stub(), device="cpu", batch_size=32, inception_score=False)
    after_extract = peak_kb()
    print(json.dumps({"base_kb": base, "read_kb": after_read, "extract_kb": after_extract, "sum": total,
                      "read_growth_kb": after_read - start_read, "extract_growth_kb": after_extract - start_extract,
                      "count": s.count, "mean0": float(s.pool_stats.mu[0])}))
""")


def _write_big(path: Path, n: int, h: int, w: int) -> tuple[int, float]:
    writer = NpzImageWriter(path, n, h, w)
    total, ch0 = 0, 0.0
    for start in range(0, n, 256):
        b = _images(min(256, n - start), h, w, seed=start)
        total += int(b.sum(dtype=np.int64))
        ch0 += float(b[..., 0].astype(np.float64).mean((1, 2)).sum())
        writer.write(b)
    writer.close()
    return total, ch0 / n


def _measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_streaming_memory_bound_300mb(tmp_path):
    path = tmp_path / "big.npz"
    total, ch0 = _write_big(path, 1600, 256, 256)  # 315 MB of images
    size_mb = path.stat().st_size / 2**20
    m = _measure(path)
    assert m["sum"] == total and m["count"] == 1600
    assert m["mean0"] == pytest.approx(ch0, rel=1e-9)
    grow_read = m["read_growth_kb"] / 1024
    grow_extract = m["extract_growth_kb"] / 1024
    print(f"npz {size_mb:.0f} MB: peak RSS growth read {grow_read:.1f} MB, extract {grow_extract:.1f} MB")
    assert grow_read < 64  # MB, batch-sized buffers only
    assert grow_extract < 128


@pytest.mark.slow
def test_streaming_memory_bound_few_gb(tmp_path):
    path = tmp_path / "huge.npz"
    total, _ = _write_big(path, 16000, 256, 256)  # 3.1 GB
    m = _measure(path)
    assert m["sum"] == total and m["count"] == 16000
    print(f"3.1 GB npz: peak RSS {m['extract_kb'] / 1024:.0f} MB, growth while extracting "
          f"{m['extract_growth_kb'] / 1024:.0f} MB")
    assert m["extract_growth_kb"] / 1024 < 128  # batch-sized buffers only, as for the 300 MB file
    assert m["extract_kb"] / 1024 < 1024  # far below the file size and the 4 GB bound


def test_memory_measurement_ignores_the_parent_process(tmp_path):
    """The measuring subprocess reports its own peak, not the high-water mark of the process that started it."""
    path = tmp_path / "small.npz"
    _write_big(path, 64, 16, 16)
    ballast = np.ones(1_200_000_000 // 8)  # this process now peaks 1.2 GB higher
    ballast += 1
    m = _measure(path)
    del ballast
    print(f"measuring process: peak RSS {m['extract_kb'] / 1024:.0f} MB")
    assert m["count"] == 64
    assert m["extract_kb"] / 1024 < 1100  # python + torch + numpy alone, well below 1.2 GB
