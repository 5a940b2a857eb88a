"""TF1 legacy bilinear resize against its closed form (loops), and the sFID (h, w, c) flatten order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerance import assert_close_to_scale

from mixflow_bench.metrics.inception import nhwc_flatten_spatial
from mixflow_bench.metrics.resize import resize_bilinear_tf1

pytestmark = pytest.mark.float_sensitive  # also run with OMP_NUM_THREADS=1 in CI (.ci/run)


def _tf1_closed_form(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False, written with loops in float32."""
    c, in_h, in_w = img.shape
    sy = np.float32(in_h) / np.float32(out_h)
    sx = np.float32(in_w) / np.float32(out_w)
    out = np.zeros((c, out_h, out_w), np.float32)
    for i in range(out_h):
        fy = np.float32(i) * sy
        y0 = int(np.floor(fy))
        y1 = min(y0 + 1, in_h - 1)
        ly = np.float32(fy - np.float32(y0))
        for j in range(out_w):
            fx = np.float32(j) * sx
            x0 = int(np.floor(fx))
            x1 = min(x0 + 1, in_w - 1)
            lx = np.float32(fx - np.float32(x0))
            for ch in range(c):
                tl, tr = img[ch, y0, x0], img[ch, y0, x1]
                bl, br = img[ch, y1, x0], img[ch, y1, x1]
                top = np.float32(tl + np.float32((tr - tl) * lx))
                bottom = np.float32(bl + np.float32((br - bl) * lx))
                out[ch, i, j] = np.float32(top + np.float32((bottom - top) * ly))
    return out


@pytest.mark.parametrize(
    "shape,size", [((5, 7), (11, 13)), ((12, 9), (5, 4)), ((8, 8), (299 // 20, 299 // 20)), ((3, 10), (7, 3))]
)
def test_resize_matches_closed_form(shape, size):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, *shape)).astype(np.float32)
    got = resize_bilinear_tf1(torch.from_numpy(img)[None], size)[0].numpy()
    want = _tf1_closed_form(img, *size)
    # float32 rounding at the image's scale (0..255): the kernel and the closed form order the products differently
    assert_close_to_scale(torch.from_numpy(got), torch.from_numpy(want), ulps=8)


def test_resize_is_not_half_pixel_interpolate():
    # guards against F.interpolate(align_corners=False), which uses half-pixel centres
    img = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    ours = resize_bilinear_tf1(img, (3, 3))
    half_pixel = torch.nn.functional.interpolate(img, size=(3, 3), mode="bilinear", align_corners=False)
    assert not torch.allclose(ours, half_pixel)
    # src = dst * 4/3: output (0, 0) is the corner pixel exactly
    assert float(ours[0, 0, 0, 0]) == 0.0


def test_resize_256_to_299_against_closed_form_rows():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(1, 256, 256)).astype(np.float32)
    got = resize_bilinear_tf1(torch.from_numpy(img)[None], (299, 299))[0].numpy()
    # closed form on a few output rows/cols: slice the input rows each output row uses
    for i in (0, 1, 150, 297, 298):
        fy = np.float32(i) * (np.float32(256) / np.float32(299))
        y0 = int(np.floor(fy))
        y1 = min(y0 + 1, 255)
        ly = np.float32(fy - y0)
        for j in (0, 77, 298):
            fx = np.float32(j) * (np.float32(256) / np.float32(299))
            x0 = int(np.floor(fx))
            x1 = min(x0 + 1, 255)
            lx = np.float32(fx - x0)
            top = img[0, y0, x0] + (img[0, y0, x1] - img[0, y0, x0]) * lx
            bot = img[0, y1, x0] + (img[0, y1, x1] - img[0, y1, x0]) * lx
            assert got[0, i, j] == pytest.approx(top + (bot - top) * ly, abs=1e-4)


def test_spatial_flatten_is_hwc_order():
    n, c, h, w = 2, 9, 3, 4
    # value encodes its (h, w, c) position: TF's NHWC reshape lists c fastest, then w, then h
    fmap = torch.zeros(n, c, h, w)
    for b, ch, y, x in np.ndindex(n, c, h, w):
        fmap[b, ch, y, x] = b * 10000 + y * 100 + x * 10 + ch
    flat = nhwc_flatten_spatial(fmap, channels=7)
    assert flat.shape == (n, h * w * 7)
    want = [
        b * 10000 + y * 100 + x * 10 + ch
        for b in range(n)
        for y in range(h)
        for x in range(w)
        for ch in range(7)
    ]
    assert flat.reshape(-1).tolist() == want
    # the NCHW reshape (c, h, w) order would differ
    assert not torch.equal(flat, fmap[:, :7].reshape(n, -1))
