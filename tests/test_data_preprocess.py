"""ADM center crop and RGB decoding against an independent implementation of the published formula."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mixflow_bench.data.preprocess import adm_center_crop, decode_rgb, preprocess_to_array


def reference_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """ADM formula, written out independently: halve with BOX while short >= 2*size, bicubic, crop."""
    w, h = img.size
    while min(w, h) >= 2 * size:
        w, h = w // 2, h // 2
        img = img.resize((w, h), Image.BOX)
    s = size / min(w, h)
    w2, h2 = int(round(w * s)), int(round(h * s))
    arr = np.array(img.resize((w2, h2), Image.BICUBIC))
    y0, x0 = (h2 - size) // 2, (w2 - size) // 2
    return arr[y0 : y0 + size, x0 : x0 + size]


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx % 251, yy % 241, (3 * xx + 5 * yy) % 256], -1) + rng.integers(-30, 30, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


SIZES = [
    (500, 375),
    (375, 500),
    (1023, 769),
    (512, 512),
    (513, 1100),
    (300, 257),
    (200, 90),
    (1280, 1024),
    (777, 511),
]


@pytest.mark.parametrize("target", [256, 512])
@pytest.mark.parametrize("wh", SIZES)
def test_crop_matches_reference(target: int, wh: tuple[int, int]) -> None:
    img = _image(*wh, seed=wh[0] * 7 + wh[1])
    got = np.asarray(adm_center_crop(img, target))
    want = reference_center_crop(img, target)
    assert got.shape == (target, target, 3)
    np.testing.assert_array_equal(got, want)


def test_box_halving_is_2x2_mean() -> None:
    """On an even-sized image the first ADM step equals the mean of 2x2 blocks (rounded)."""
    img = _image(1040, 600, seed=3)  # short side 600 >= 2*256 -> one halving, then bicubic by 256/300
    a = np.asarray(img).astype(np.float64)
    blocks = a.reshape(300, 2, 520, 2, 3).mean(axis=(1, 3))
    halved = np.asarray(img.resize((520, 300), Image.BOX)).astype(np.float64)
    assert np.abs(halved - blocks).max() <= 1.0  # PIL fixed-point box filter: within one level
    # and the crop itself equals bicubic(halved) cropped at the published offsets
    ref = np.asarray(
        Image.fromarray(np.asarray(img.resize((520, 300), Image.BOX))).resize((444, 256), Image.BICUBIC)
    )
    np.testing.assert_array_equal(np.asarray(adm_center_crop(img, 256)), ref[:, 94 : 94 + 256])


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_rgb_conversion_of_gray_cmyk_palette() -> None:
    base = _image(64, 48, seed=5)
    gray = base.convert("L")
    out = np.asarray(decode_rgb(_encode(gray, "PNG")))
    assert out.shape == (48, 64, 3)
    for c in range(3):  # grayscale -> R = G = B = gray value (lossless PNG)
        np.testing.assert_array_equal(out[..., c], np.asarray(gray))
    cmyk = base.convert("CMYK")
    out = np.asarray(decode_rgb(_encode(cmyk, "TIFF")))  # lossless CMYK; PIL inverts: R = 255 - C
    cmyk_arr = np.asarray(cmyk).astype(int)
    assert cmyk_arr[..., 3].max() == 0  # PIL's RGB->CMYK puts everything in C, M, Y
    np.testing.assert_array_equal(out.astype(int), 255 - cmyk_arr[..., :3])
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE)
    out = np.asarray(decode_rgb(_encode(pal, "PNG")))
    lut = np.asarray(pal.getpalette()[: 3 * 256]).reshape(-1, 3)
    np.testing.assert_array_equal(out, lut[np.asarray(pal)])


def test_preprocess_to_array_uses_rgb_then_crop(tmp_path) -> None:
    img = _image(90, 300, seed=9).convert("L")
    path = tmp_path / "g.jpg"
    img.save(path, "JPEG")
    want = reference_center_crop(Image.open(path).convert("RGB"), 32)
    np.testing.assert_array_equal(preprocess_to_array(str(path), 32), want)
