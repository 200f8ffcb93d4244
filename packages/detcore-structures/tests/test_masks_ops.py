"""Mask methods that run native ops: BitMasks.crop_and_resize (``detcore.ops.roi_align``) and
ROIMasks.to_bitmasks / BitMasks.from_roi_masks (``detcore.ops.paste_masks_in_image``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcore.structures import BitMasks, Boxes, PolygonMasks, ROIMasks


def _shared() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "reference").is_dir():
            return parent / "shared"
        if (parent.parent / "shared" / "reference").is_dir():
            return parent.parent / "shared"
    raise FileNotFoundError("cannot find the shared/reference directory above " + str(Path(__file__)))


GOLDEN = _shared() / "reference" / "golden" / "ops"


def ref_roi_align_aligned(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Float64 reference of ROIAlign(aligned=True, sampling_ratio=0, scale=1) on [N, H, W] maps, one box each."""
    n, height, width = masks.shape
    out = torch.zeros(n, size, size, dtype=torch.float64)
    m = masks.double()

    def bilinear(img, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= height - 1:
            y0 = y1 = height - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= width - 1:
            x0 = x1 = width - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        hy, hx = 1 - ly, 1 - lx
        return hy * hx * img[y0][x0] + hy * lx * img[y0][x1] + ly * hx * img[y1][x0] + ly * lx * img[y1][x1]

    for i in range(n):
        x_start, y_start, x_end, y_end = (float(v) - 0.5 for v in boxes[i].double())
        bin_w = (x_end - x_start) / size
        bin_h = (y_end - y_start) / size
        grid_h = int(np.ceil((y_end - y_start) / size))
        grid_w = int(np.ceil((x_end - x_start) / size))
        grid_h, grid_w = max(grid_h, 1), max(grid_w, 1)
        img = m[i].tolist()
        for ph in range(size):
            for pw in range(size):
                acc = 0.0
                for iy in range(grid_h):
                    y = y_start + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x_start + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += float(bilinear(img, y, x))
                out[i, ph, pw] = acc / (grid_h * grid_w)
    return out


def test_bitmasks_crop_and_resize_vs_reference():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 20, 24, dtype=torch.bool)
    masks[0, 3:12, 4:15] = True
    masks[1, 10:20, 0:24] = True
    masks[2] = torch.rand(20, 24, generator=g) > 0.5
    masks[3, 5:6, 5:6] = True
    boxes = torch.tensor(
        [[4.0, 3.0, 15.0, 12.0], [0.0, 5.0, 24.0, 20.0], [2.3, 1.7, 17.9, 13.1], [3.0, 3.0, 9.0, 9.0]]
    )
    out = BitMasks(masks).crop_and_resize(boxes, 7)
    assert out.shape == (4, 7, 7) and out.dtype == torch.bool
    ref = ref_roi_align_aligned(masks, boxes, 7)
    decided = (ref - 0.5).abs() > 1e-5  # pixels exactly at the threshold may go either way in float32
    assert torch.equal(out[decided], (ref >= 0.5)[decided])
    assert out[0].all()  # the box is exactly the mask
    assert out[1, 5:].all() and not out[1, :2].any()
    assert BitMasks(masks).crop_and_resize(Boxes(boxes), 5).shape == (4, 5, 5)


def test_polygon_and_bitmask_crop_and_resize_agree():
    """Rasterized-polygon crops and ROIAlign crops of the rasterized mask are two approximations of the
    same shape. Documented tolerance: mean per-instance IoU >= 0.9 and each >= 0.8 at mask size 28 for
    convex polygons spanning >= 20 px; they differ only along the boundary."""
    rng = np.random.default_rng(0)
    polygons = []
    for _ in range(8):
        cx, cy = rng.uniform(40, 120, size=2)
        ang = np.sort(rng.uniform(0, 2 * np.pi, size=9))
        r = rng.uniform(15, 35)
        polygons.append([np.stack([cx + r * np.cos(ang), cy + r * 0.8 * np.sin(ang)], 1).reshape(-1)])
    pm = PolygonMasks(polygons)
    bm = BitMasks.from_polygon_masks(pm, 160, 170)
    boxes = pm.get_bounding_boxes().tensor
    boxes = boxes + torch.tensor([-2.0, -3.0, 2.5, 1.0])  # proposal-like boxes around the objects
    a = pm.crop_and_resize(boxes, 28)
    b = bm.crop_and_resize(boxes, 28)
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    iou = inter / union
    assert float(iou.mean()) >= 0.9, iou
    assert float(iou.min()) >= 0.8, iou


def test_roi_masks_to_bitmasks_golden():
    data = np.load(GOLDEN / "paste_masks_in_image.npz")
    masks = torch.from_numpy(data["masks"])
    boxes = torch.from_numpy(data["boxes"])
    h, w = (int(v) for v in data["image_shape"])
    for thr in (0.5, 0.3):
        bm = ROIMasks(masks).to_bitmasks(Boxes(boxes), h, w, threshold=thr)
        assert isinstance(bm, BitMasks) and bm.tensor.shape == (6, h, w)
        assert torch.equal(bm.tensor, torch.from_numpy(data[f"pasted_threshold_{thr}"]).bool())
    bm = BitMasks.from_roi_masks(ROIMasks(masks), boxes, h, w)
    assert torch.equal(bm.tensor, torch.from_numpy(data["pasted_threshold_0.5"]).bool())


def test_roi_masks_to_bitmasks_errors():
    with pytest.raises(ValueError, match=r"Tensor\[N, 4\]"):
        ROIMasks(torch.zeros(2, 5, 5)).to_bitmasks(torch.zeros(2, 5), 10, 10)
