"""roi_align_rotated / ROIAlignRotated: vs detectron2 golden data, vs a float64 reference written here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detcore.ops import ROIAlignRotated, roi_align, roi_align_rotated


def _shared() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared").is_dir():
            return parent / "shared"
        if (parent.parent / "shared").is_dir():
            return parent.parent / "shared"
    raise FileNotFoundError("no shared/ directory above the tests")


GOLDEN = _shared() / "reference" / "golden" / "ops"


def _bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[C, S] values of img [C, H, W] at samples y, x [S] (detectron2's rules), float64."""
    _, h, w = img.shape
    valid = (y >= -1) & (y <= h) & (x >= -1) & (x <= w)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()
    y_top, x_top = y_low >= h - 1, x_low >= w - 1
    y_low, x_low = torch.where(y_top, h - 1, y_low), torch.where(x_top, w - 1, x_low)
    y_high, x_high = torch.where(y_top, y_low, y_low + 1), torch.where(x_top, x_low, x_low + 1)
    y, x = torch.where(y_top, y_low.double(), y), torch.where(x_top, x_low.double(), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    v = (
        hy * hx * img[:, y_low, x_low]
        + hy * lx * img[:, y_low, x_high]
        + ly * hx * img[:, y_high, x_low]
        + ly * lx * img[:, y_high, x_high]
    )
    return v * valid


def reference_roi_align_rotated(input, rois, output_size, spatial_scale, sampling_ratio):
    """Direct float64 transcription of detectron2's ROIAlignRotated (one bin at a time)."""
    ph, pw = output_size
    input, rois = input.double(), rois.double()
    out = torch.zeros(rois.shape[0], input.shape[1], ph, pw, dtype=torch.float64)
    for k, (b, cx, cy, w, h, angle) in enumerate(rois.tolist()):
        cx, cy = cx * spatial_scale - 0.5, cy * spatial_scale - 0.5
        w, h = w * spatial_scale, h * spatial_scale
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(h / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(w / pw)
        if gh <= 0 or gw <= 0:
            continue
        iy = torch.arange(gh, dtype=torch.float64)
        ix = torch.arange(gw, dtype=torch.float64)
        for i in range(ph):
            for j in range(pw):
                yy = -h / 2 + i * h / ph + (iy + 0.5) * (h / ph) / gh
                xx = -w / 2 + j * w / pw + (ix + 0.5) * (w / pw) / gw
                yy, xx = torch.meshgrid(yy, xx, indexing="ij")
                y = yy * c - xx * s + cy
                x = yy * s + xx * c + cx
                out[k, :, i, j] = _bilinear(input[int(b)], y.flatten(), x.flatten()).sum(-1) / (gh * gw)
    return out


def _golden_cases():
    for name in ("roi_align_rotated", "roi_align_rotated_edge"):
        for suffix, dtype in (("f32", torch.float32), ("f64", torch.float64)):
            path = GOLDEN / f"{name}_{suffix}.npz"
            data = np.load(path)
            for key in data.files:
                parts = key.split("_")
                if key.startswith("out") and len(parts) == 3:
                    yield pytest.param(path, key, dtype, id=f"{name}_{suffix}-{key}")


def _parse(key):
    size, scale, ratio = key.split("_")
    ph, pw = (int(v) for v in size[3:].split("x"))
    return (ph, pw), float(scale[5:]), int(ratio[2:])


@pytest.mark.parametrize("path, key, dtype", list(_golden_cases()))
def test_matches_detectron2_golden(path, key, dtype):
    data = np.load(path)
    x = torch.from_numpy(data["input"]).requires_grad_()
    rois = torch.from_numpy(data[f"{key}_rois"] if f"{key}_rois" in data.files else data["rois"])
    assert x.dtype == dtype
    output_size, scale, ratio = _parse(key)
    out = roi_align_rotated(x, rois, output_size, scale, ratio)
    out.backward(torch.from_numpy(data[f"{key}_grad_output"]))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.detach(), torch.from_numpy(data[key]), rtol=0, atol=tol)
    torch.testing.assert_close(x.grad, torch.from_numpy(data[f"{key}_grad_input"]), rtol=0, atol=tol)
    ref = reference_roi_align_rotated(x.detach(), rois, output_size, scale, ratio)
    torch.testing.assert_close(out.detach().double(), ref, rtol=0, atol=tol)


def _random_rotated(n, k, width, height, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([width + 8.0, height + 8.0]) - 4
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 14
    angle = torch.rand(k, 1, generator=g, dtype=torch.float64) * 720 - 360
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([batch, c, wh, angle], 1).to(dtype)


@pytest.mark.parametrize("k", [5, 300])
@pytest.mark.parametrize("ratio", [0, 2])
def test_random_rois_match_reference(k, ratio):
    x = torch.randn(2, 6, 13, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rois = _random_rotated(2, k, 17, 13, seed=k)
    out = roi_align_rotated(x, rois, (3, 2), 1.0, ratio)
    ref = reference_roi_align_rotated(x, rois[:40], (3, 2), 1.0, ratio)
    torch.testing.assert_close(out[:40], ref, rtol=1e-10, atol=1e-10)
    out32 = roi_align_rotated(x.float(), rois.float(), (3, 2), 1.0, ratio)
    torch.testing.assert_close(out32, out.float(), rtol=1e-4, atol=1e-4)


def test_angle_zero_equals_aligned_roi_align():
    x = torch.randn(2, 9, 20, 24, dtype=torch.float64)
    boxes = torch.tensor(
        [[0, 2.0, 3.0, 15.0, 11.0], [1, -3.0, 4.5, 30.0, 22.0], [0, 5.0, 5.0, 5.5, 9.0]], dtype=torch.float64
    )
    rotated = torch.cat(
        [
            boxes[:, :1],
            (boxes[:, 1:3] + boxes[:, 3:5]) / 2,
            boxes[:, 3:5] - boxes[:, 1:3],
            torch.zeros(3, 1, dtype=torch.float64),
        ],
        1,
    )
    torch.testing.assert_close(
        roi_align_rotated(x, rotated, (4, 3), 0.5, 0), roi_align(x, boxes, (4, 3), 0.5, 0, aligned=True)
    )


def test_adversarial_rois():
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [
            [0, -40.0, -40.0, 5.0, 5.0, 30.0],  # outside
            [0, 5.0, 4.0, 0.0, 0.0, 45.0],  # zero size
            [0, 5.0, 4.0, 1e8, 3e7, 33.0],  # huge: only samples near the map are visited
            [0, 5.0, 4.0, 40.0, 3.0, 1e5],  # large angle
        ],
        dtype=torch.float64,
    )
    out = roi_align_rotated(x, rois, (3, 3), 1.0, 0)
    assert (out[:2] == 0).all()
    assert torch.isfinite(out).all() and out[2].abs().max() < 1e-6
    torch.testing.assert_close(out[3], reference_roi_align_rotated(x.detach(), rois[3:], (3, 3), 1.0, 0)[0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert roi_align_rotated(x, rois[:0], 3).shape == (0, 2, 3, 3)


def test_list_of_boxes_channels_last_half():
    x = torch.randn(2, 20, 10, 12)
    boxes = [torch.tensor([[4.0, 5.0, 6.0, 3.0, 30.0]]), torch.tensor([[6.0, 4.0, 8.0, 8.0, -60.0]])]
    rois = torch.tensor([[0, 4.0, 5.0, 6.0, 3.0, 30.0], [1, 6.0, 4.0, 8.0, 8.0, -60.0]])
    expected = roi_align_rotated(x, rois, 4, 1.0, 2)
    torch.testing.assert_close(roi_align_rotated(x, boxes, 4, 1.0, 2), expected)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_align_rotated(cl, rois, 4, 1.0, 2), expected)
    torch.testing.assert_close(roi_align_rotated(x[:, ::2], rois, 4, 1.0, 2), expected[:, ::2])
    half = roi_align_rotated(x.half(), rois.half(), 4, 1.0, 2)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected, rtol=1e-2, atol=1e-2)


def test_gradcheck_opcheck_compile():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.0, 3.0, 4.0, 3.0, 25.0], [1, 2.5, 4.0, 5.0, 2.0, -70.0]], dtype=torch.float64)
    fn = lambda t: roi_align_rotated(t, rois, (2, 3), 1.0, 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.library.opcheck(torch.ops.detcore.roi_align_rotated.default, (x, rois, 1.0, 2, 3, 0))
    grad = torch.randn(2, 2, 2, 3, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.detcore._roi_align_rotated_backward.default, (grad, rois, 1.0, 2, 3, 2, 2, 6, 7, 0)
    )
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), fn(x))


def test_module_and_bad_inputs():
    m = ROIAlignRotated((7, 7), 0.25, 0)
    assert repr(m) == "ROIAlignRotated(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=0)"
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 4.0, 4.0, 3.0, 2.0, 10.0]])
    torch.testing.assert_close(m(x, rois.double()), roi_align_rotated(x, rois, 7, 0.25, 0))
    with pytest.raises(ValueError, match=r"rois must have shape \[K, 6\]"):
        roi_align_rotated(x, rois[:, :5], 2)
    with pytest.raises(ValueError, match="non-negative width and height"):
        roi_align_rotated(x, torch.tensor([[0, 4.0, 4.0, -3.0, 2.0, 10.0]]), 2)
    with pytest.raises(ValueError, match="batch index"):
        roi_align_rotated(x, torch.tensor([[5, 4.0, 4.0, 3.0, 2.0, 10.0]]), 2)
    with pytest.raises(ValueError, match="input must have shape"):
        roi_align_rotated(x[None], rois, 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        roi_align_rotated(x, rois, 0)
    with pytest.raises(TypeError, match="same dtype"):
        roi_align_rotated(x, rois.double(), 2)
