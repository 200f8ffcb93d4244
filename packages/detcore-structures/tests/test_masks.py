from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detcore.structures import BitMasks, Boxes, PolygonMasks, ROIMasks, polygon_area, polygons_to_bitmask
from detcore.structures.masks import rasterize_polygons_within_box


def rect(x0, y0, x1, y1):
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)


def ref_bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Loop reference: (x_min, y_min, x_max + 1, y_max + 1) of set pixels, zeros for empty masks."""
    out = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(xs):
            out[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return out


# ---------------------------------------------------------------- rasterization


@settings(max_examples=30, deadline=None)
@given(x0=st.integers(0, 10), y0=st.integers(0, 10), w=st.integers(1, 10), h=st.integers(1, 10))
def test_polygons_to_bitmask_integer_rectangle(x0, y0, w, h):
    m = polygons_to_bitmask([rect(x0, y0, x0 + w, y0 + h)], 24, 22)
    assert m.dtype == bool and m.shape == (24, 22)
    expected = np.zeros((24, 22), dtype=bool)
    expected[y0 : y0 + h, x0 : x0 + w] = True
    np.testing.assert_array_equal(m, expected)


def test_polygons_to_bitmask_union_and_empty():
    m = polygons_to_bitmask([rect(0, 0, 2, 2), rect(1, 1, 4, 3)], 5, 5)
    assert m.sum() == 4 + 6 - 1
    assert polygons_to_bitmask([], 3, 4).shape == (3, 4)
    assert not polygons_to_bitmask([], 3, 4).any()


def test_polygon_area_hand_computed():
    assert polygon_area(np.array([0.0, 4, 4, 0]), np.array([0.0, 0, 3, 3])) == 12.0
    tri = np.array([0.0, 0, 4, 0, 0, 3])
    assert polygon_area(tri[0::2], tri[1::2]) == 6.0


def test_rasterize_within_box():
    # the polygon equals the box: full mask; half of the box: left half
    box = np.array([10.0, 20.0, 30.0, 60.0])
    full = rasterize_polygons_within_box([rect(10, 20, 30, 60)], box, 8)
    assert full.dtype == torch.bool and full.all()
    left = rasterize_polygons_within_box([rect(10, 20, 20, 60)], box, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:, :4] = True
    assert torch.equal(left, expected)
    # the input polygons are not modified
    p = rect(10, 20, 20, 60)
    rasterize_polygons_within_box([p], box, 8)
    np.testing.assert_array_equal(p, rect(10, 20, 20, 60))


# ---------------------------------------------------------------- BitMasks


def random_bitmasks(n=5, h=12, w=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, h, w, generator=g) > 0.85
    t[1] = False  # one empty mask
    return t


def test_bitmasks_basics():
    t = random_bitmasks()
    bm = BitMasks(t.to(torch.uint8))
    assert bm.tensor.dtype == torch.bool and bm.image_size == (12, 15)
    assert len(bm) == 5 and repr(bm) == "BitMasks(num_instances=5)"
    assert bm.nonempty().tolist() == [bool(m.any()) for m in t]
    assert bm.area().tolist() == [int(m.sum()) for m in t]
    torch.testing.assert_close(bm.get_bounding_boxes().tensor, ref_bounding_boxes(t))
    assert isinstance(bm.get_bounding_boxes(), Boxes)
    assert torch.equal(bm[2].tensor, t[2:3])
    assert torch.equal(bm[1:4].tensor, t[1:4])
    assert torch.equal(bm[torch.tensor([4, 0])].tensor, t[[4, 0]])
    sel = torch.tensor([True, False, False, True, True])
    assert torch.equal(bm[sel].tensor, t[sel])
    assert len(list(bm)) == 5
    assert torch.equal(BitMasks.cat([bm[0:2], bm[2:]]).tensor, t)
    assert bm.to("cpu").device.type == "cpu"
    assert BitMasks(np.zeros((0, 3, 4))).tensor.shape == (0, 3, 4)
    assert BitMasks(torch.zeros(0, 3, 4)).get_bounding_boxes().tensor.shape == (0, 4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 4), h=st.integers(1, 9), w=st.integers(1, 9))
def test_bitmasks_bounding_boxes_property(seed, n, h, w):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, h, w, generator=g) > 0.7
    torch.testing.assert_close(BitMasks(t).get_bounding_boxes().tensor, ref_bounding_boxes(t))


def test_bitmasks_errors():
    with pytest.raises(ValueError, match=r"BitMasks: tensor must have shape \[N, H, W\]"):
        BitMasks(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one box per mask"):
        BitMasks(torch.zeros(2, 4, 4)).crop_and_resize(torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"Tensor\[N, 4\]"):
        BitMasks(torch.zeros(2, 4, 4)).crop_and_resize(torch.zeros(2, 5), 2)
    with pytest.raises(ValueError, match="non-empty"):
        BitMasks.cat([])


def test_bitmasks_crop_and_resize_empty():
    out = BitMasks(torch.zeros(0, 4, 4)).crop_and_resize(torch.zeros(0, 4), 7)
    assert out.shape == (0, 7, 7) and out.dtype == torch.bool


def test_bitmasks_from_polygon_masks():
    pm = PolygonMasks([[rect(1, 1, 3, 4)], [rect(0, 0, 2, 2), rect(4, 4, 5, 5)], []])
    bm = BitMasks.from_polygon_masks(pm, 6, 7)
    assert bm.tensor.shape == (3, 6, 7)
    assert bm.area().tolist() == [6, 5, 0]
    assert BitMasks.from_polygon_masks([], 6, 7).tensor.shape == (0, 6, 7)
    torch.testing.assert_close(bm.get_bounding_boxes().tensor[:2], pm.get_bounding_boxes().tensor[:2])


# ---------------------------------------------------------------- PolygonMasks


def test_polygon_masks_basics():
    pm = PolygonMasks(
        [
            [rect(0, 0, 4, 3)],
            [[0.0, 0.0, 4.0, 0.0, 0.0, 3.0], torch.tensor([10.0, 10.0, 12.0, 10.0, 12.0, 12.0, 10.0, 12.0])],
            [],
        ]
    )
    assert len(pm) == 3 and repr(pm) == "PolygonMasks(num_instances=3)"
    assert all(p.dtype == np.float64 for inst in pm.polygons for p in inst)
    torch.testing.assert_close(pm.area(), torch.tensor([12.0, 10.0, 0.0], dtype=torch.float64))
    assert pm.nonempty().tolist() == [True, True, False]
    boxes = pm.get_bounding_boxes().tensor
    torch.testing.assert_close(boxes[:2], torch.tensor([[0.0, 0.0, 4.0, 3.0], [0.0, 0.0, 12.0, 12.0]]))
    assert boxes[2, 0] == float("inf")  # detectron2: an instance without polygons gives (inf, inf, 0, 0)
    assert pm.to("cpu") is pm and pm.device.type == "cpu"
    assert len(list(pm)) == 3


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (1, [1]),
        (-1, [3]),
        (slice(1, 3), [1, 2]),
        ([3, 0], [3, 0]),
        (torch.tensor([True, False, True, False]), [0, 2]),
        (torch.tensor([2, 2]), [2, 2]),
        (np.array([False, True, False, True]), [1, 3]),
    ],
)
def test_polygon_masks_getitem(item, expected):
    pm = PolygonMasks([[rect(i, i, i + 1, i + 1)] for i in range(4)])
    sub = pm[item]
    assert isinstance(sub, PolygonMasks)
    assert [int(inst[0][0]) for inst in sub.polygons] == expected


def test_polygon_masks_cat_and_errors():
    a = PolygonMasks([[rect(0, 0, 1, 1)]])
    b = PolygonMasks([[rect(2, 2, 3, 3)], []])
    c = PolygonMasks.cat([a, b])
    assert len(c) == 3 and c.polygons[1][0][0] == 2.0
    with pytest.raises(ValueError, match=r"polygons\[0\]\[0\].*even number of >= 6"):
        PolygonMasks([[np.array([0.0, 1.0, 2.0, 3.0, 4.0])]])
    with pytest.raises(ValueError, match=r"polygons\[1\]\[0\].*got 4"):
        PolygonMasks([[rect(0, 0, 1, 1)], [np.zeros(4)]])
    with pytest.raises(ValueError, match=r"polygons\[0\] must be a list"):
        PolygonMasks([rect(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="must be a list"):
        PolygonMasks(np.zeros((1, 8)))


def ref_crop_and_resize_polygons(polygons, boxes, mask_size):
    """Reference following detectron2: shift by (x0, y0), scale by mask_size / side (>= 0.1), with the box
    arithmetic in the boxes' float32 and the polygons in float64."""
    import pycocotools.mask as mask_util

    out = []
    for polys, box in zip(polygons, boxes.numpy()):
        w, h = box[2] - box[0], box[3] - box[1]
        sx, sy = mask_size / max(w, 0.1), mask_size / max(h, 0.1)
        moved = []
        for p in polys:
            q = np.array(p, dtype=np.float64)
            q[0::2] = (q[0::2] - box[0]) * sx
            q[1::2] = (q[1::2] - box[1]) * sy
            moved.append(q)
        if moved:
            rle = mask_util.merge(mask_util.frPyObjects(moved, mask_size, mask_size))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2
                m = mask_util.decode(rle).astype(bool)
        else:
            m = np.zeros((mask_size, mask_size), dtype=bool)
        out.append(torch.from_numpy(m))
    return torch.stack(out)


def test_polygon_masks_crop_and_resize():
    g = np.random.default_rng(0)
    polygons = []
    for _ in range(6):
        cx, cy = g.uniform(20, 80, size=2)
        ang = np.sort(g.uniform(0, 2 * np.pi, size=7))
        r = g.uniform(5, 20, size=7)
        polygons.append([np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).reshape(-1)])
    polygons.append([])
    pm = PolygonMasks(polygons)
    boxes = pm.get_bounding_boxes().tensor
    boxes[-1] = torch.tensor([0.0, 0.0, 5.0, 5.0])
    boxes[0] = torch.tensor([30.0, 30.0, 30.05, 60.0])  # sub-0.1 width box
    out = pm.crop_and_resize(boxes, 28)
    assert out.shape == (7, 28, 28) and out.dtype == torch.bool
    assert torch.equal(out, ref_crop_and_resize_polygons(polygons, boxes, 28))
    assert not out[-1].any()
    assert out[1:6].flatten(1).any(1).all()
    assert pm.crop_and_resize(Boxes(boxes), 14).shape == (7, 14, 14)
    assert PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 5).shape == (0, 5, 5)
    with pytest.raises(ValueError, match="one box per instance"):
        pm.crop_and_resize(boxes[:2], 28)


# ---------------------------------------------------------------- ROIMasks


def test_roi_masks_basics_and_errors():
    t = torch.rand(4, 7, 7)
    rm = ROIMasks(t)
    assert len(rm) == 4 and repr(rm) == "ROIMasks(num_instances=4)"
    assert torch.equal(rm[1].tensor, t[1:2])
    assert torch.equal(rm[torch.tensor([True, False, True, False])].tensor, t[[0, 2]])
    assert torch.equal(ROIMasks.cat([rm[0:1], rm[1:]]).tensor, t)
    assert rm.to(torch.float64).tensor.dtype == torch.float64
    assert rm.device.type == "cpu"
    with pytest.raises(ValueError, match=r"ROIMasks: tensor must be a Tensor\[N, M, M\]"):
        ROIMasks(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="one box per mask"):
        rm.to_bitmasks(torch.zeros(3, 4), 10, 10)
