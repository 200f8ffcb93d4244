from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detcore.structures import (
    Boxes,
    BoxMode,
    matched_pairwise_iou,
    pairwise_intersection,
    pairwise_ioa,
    pairwise_iou,
    pairwise_point_box_distance,
)
from detcore.structures import boxes as boxes_module


def ref_pairwise_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Float64 reference, detectron2 semantics: inter / union where inter > 0, else 0."""
    b1 = b1.double()
    b2 = b2.double()
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = a1[:, None] + a2[None, :] - inter
    return torch.where(inter > 0, inter / union, torch.zeros_like(inter))


def random_boxes(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


# ---------------------------------------------------------------- BoxMode


def test_boxmode_values():
    assert [int(m) for m in BoxMode] == [0, 1, 2, 3, 4]
    assert BoxMode.XYWHA_ABS.name == "XYWHA_ABS"


def test_boxmode_xyxy_xywh_types_preserved():
    assert BoxMode.convert([1.0, 2.0, 4.0, 6.0], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) == [1.0, 2.0, 3.0, 4.0]
    out = BoxMode.convert((1.0, 2.0, 3.0, 4.0), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert isinstance(out, tuple) and out == (1.0, 2.0, 4.0, 6.0)
    arr = np.array([[1.0, 2.0, 4.0, 6.0]], dtype=np.float32)
    out = BoxMode.convert(arr, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 2.0, 3.0, 4.0]])
    assert arr[0, 2] == 4.0  # input not modified
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    out = BoxMode.convert(t, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 4.0, 6.0]], dtype=torch.float64))
    assert BoxMode.convert(t, BoxMode.XYWH_ABS, BoxMode.XYWH_ABS) is t


def test_boxmode_xywha_to_xyxy_hand_computed():
    # 90 degrees swaps width and height of the hull
    out = BoxMode.convert([10.0, 20.0, 8.0, 4.0, 90.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    np.testing.assert_allclose(out, [8.0, 16.0, 12.0, 24.0], atol=1e-9)
    # 45 degrees: hull side = (w + h) / sqrt(2)
    t = torch.tensor([[0.0, 0.0, 2.0, 2.0, 45.0]])
    out = BoxMode.convert(t, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    s = math.sqrt(2.0)
    torch.testing.assert_close(out, torch.tensor([[-s, -s, s, s]]))
    # to XYWH: same hull
    out = BoxMode.convert([10.0, 20.0, 8.0, 4.0, -90.0], BoxMode.XYWHA_ABS, BoxMode.XYWH_ABS)
    np.testing.assert_allclose(out, [8.0, 16.0, 4.0, 8.0], atol=1e-9)


def test_boxmode_to_xywha():
    out = BoxMode.convert([2.0, 4.0, 6.0, 10.0], BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS)
    assert out == [4.0, 7.0, 4.0, 6.0, 0.0]
    out = BoxMode.convert(np.array([[2.0, 4.0, 4.0, 6.0]]), BoxMode.XYWH_ABS, BoxMode.XYWHA_ABS)
    np.testing.assert_array_equal(out, [[4.0, 7.0, 4.0, 6.0, 0.0]])


def test_boxmode_errors():
    with pytest.raises(ValueError, match="relative"):
        BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_REL, BoxMode.XYXY_ABS)
    with pytest.raises(ValueError, match="relative"):
        BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_ABS, BoxMode.XYWH_REL)
    with pytest.raises(ValueError, match="4 or 5"):
        BoxMode.convert([0, 0, 1], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        BoxMode.convert(torch.zeros(3, 4), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    with pytest.raises(TypeError, match="box must be"):
        BoxMode.convert("abcd", BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)
sizes = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(x=finite, y=finite, w=sizes, h=sizes)
def test_boxmode_roundtrip_property(x, y, w, h):
    xywh = np.array([[x, y, w, h]], dtype=np.float64)
    xyxy = BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    back = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    np.testing.assert_allclose(back, xywh, atol=1e-9 * (1 + abs(x) + abs(y) + w + h))
    xywha = BoxMode.convert(xyxy, BoxMode.XYXY_ABS, BoxMode.XYWHA_ABS)
    again = BoxMode.convert(xywha, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    np.testing.assert_allclose(again, xyxy, atol=1e-9 * (1 + abs(x) + abs(y) + w + h))


@settings(max_examples=40, deadline=None)
@given(w=st.floats(0.0, 100.0), h=st.floats(0.0, 100.0), a=st.floats(-720.0, 720.0))
def test_boxmode_xywha_hull_contains_corners(w, h, a):
    box = torch.tensor([[5.0, -3.0, w, h, a]], dtype=torch.float64)
    hull = BoxMode.convert(box, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)[0]
    # corners of the rotated rectangle (CCW rotation in image space: x' = c x + s y, y' = -s x + c y)
    t = math.radians(a)
    c, s = math.cos(t), math.sin(t)
    xs, ys = [], []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        xs.append(5.0 + c * dx + s * dy)
        ys.append(-3.0 - s * dx + c * dy)
    expected = torch.tensor([min(xs), min(ys), max(xs), max(ys)], dtype=torch.float64)
    torch.testing.assert_close(hull, expected, atol=1e-9, rtol=0)


# ---------------------------------------------------------------- Boxes


def test_boxes_construction():
    b = Boxes([[0, 0, 1, 2]])
    assert b.tensor.dtype == torch.float32 and b.tensor.shape == (1, 4)
    assert Boxes([]).tensor.shape == (0, 4)
    assert Boxes(torch.empty(0)).tensor.dtype == torch.float32
    assert Boxes(torch.zeros(0, 4, dtype=torch.float64)).tensor.dtype == torch.float64
    assert Boxes(torch.ones(2, 4, dtype=torch.int64)).tensor.dtype == torch.float32
    assert Boxes(np.ones((3, 4))).tensor.shape == (3, 4)


@pytest.mark.parametrize("bad", [torch.zeros(3, 5), torch.zeros(4), torch.zeros(2, 2, 4)])
def test_boxes_bad_shape(bad):
    with pytest.raises(ValueError, match=r"Boxes: tensor must have shape \[N, 4\]"):
        Boxes(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_boxes_non_finite(value):
    t = torch.zeros(3, 4)
    t[1, 2] = value
    with pytest.raises(ValueError, match=r"finite.*rows \[1\]"):
        Boxes(t)


def test_boxes_methods_hand_computed():
    b = Boxes(torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 5.0, 8.0], [-3.0, 2.0, 12.0, 4.0]]))
    torch.testing.assert_close(b.area(), torch.tensor([200.0, 0.0, 30.0]))
    torch.testing.assert_close(b.get_centers(), torch.tensor([[5.0, 10.0], [5.0, 6.5], [4.5, 3.0]]))
    assert b.nonempty().tolist() == [True, False, True]
    assert b.nonempty(threshold=2.5).tolist() == [True, False, False]
    assert b.inside_box((21, 11)).tolist() == [True, True, False]
    assert b.inside_box((21, 10)).tolist() == [False, True, False]
    assert b.inside_box((21, 12), boundary_threshold=3).tolist() == [True, True, True]
    c = b.clone()
    c.clip((6, 11))
    torch.testing.assert_close(
        c.tensor, torch.tensor([[0.0, 0.0, 10.0, 6.0], [5.0, 5.0, 5.0, 6.0], [0.0, 2.0, 11.0, 4.0]])
    )
    assert b.tensor[0, 3] == 20.0  # clone is independent
    c.scale(2.0, 0.5)
    torch.testing.assert_close(
        c.tensor, torch.tensor([[0.0, 0.0, 20.0, 3.0], [10.0, 2.5, 10.0, 3.0], [0.0, 1.0, 22.0, 2.0]])
    )


def test_boxes_clip_rejects_non_finite():
    b = Boxes(torch.zeros(1, 4))
    b.tensor[0, 0] = float("nan")
    with pytest.raises(ValueError, match="inf or NaN"):
        b.clip((5, 5))


def test_boxes_indexing_len_iter_repr_cat_to():
    t = random_boxes(6, 0)
    b = Boxes(t)
    assert len(b) == 6
    one = b[2]
    assert isinstance(one, Boxes) and one.tensor.shape == (1, 4)
    torch.testing.assert_close(one.tensor[0], t[2])
    torch.testing.assert_close(b[-1].tensor[0], t[5])
    torch.testing.assert_close(b[np.int64(1)].tensor[0], t[1])
    torch.testing.assert_close(b[1:4].tensor, t[1:4])
    mask = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(b[mask].tensor, t[mask])
    idx = torch.tensor([5, 0, 0])
    torch.testing.assert_close(b[idx].tensor, t[idx])
    torch.testing.assert_close(b[[1, 3]].tensor, t[[1, 3]])
    assert b[torch.zeros(6, dtype=torch.bool)].tensor.shape == (0, 4)
    rows = list(b)
    assert len(rows) == 6 and rows[0].shape == (4,)
    assert repr(b).startswith("Boxes(tensor(")
    cat = Boxes.cat([b[0:2], b[3:6], Boxes([])])
    torch.testing.assert_close(cat.tensor, t[[0, 1, 3, 4, 5]])
    assert Boxes.cat([]).tensor.shape == (0, 4)
    with pytest.raises(TypeError, match="must be Boxes"):
        Boxes.cat([b, t])
    moved = b.to(torch.float64)
    assert moved.tensor.dtype == torch.float64 and b.device == torch.device("cpu")
    with pytest.raises(IndexError):
        b[torch.tensor(1)]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 12),
    data=st.data(),
)
def test_boxes_indexing_property(n, data):
    t = random_boxes(n, n)
    b = Boxes(t)
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=torch.bool)
    torch.testing.assert_close(b[mask].tensor, t[mask])
    if n:
        idx = data.draw(st.lists(st.integers(0, n - 1), max_size=10))
        torch.testing.assert_close(b[torch.tensor(idx, dtype=torch.long)].tensor, t[idx].reshape(-1, 4))
        lo = data.draw(st.integers(-n, n))
        hi = data.draw(st.integers(-n, n))
        torch.testing.assert_close(b[lo:hi].tensor, t[lo:hi])


# ---------------------------------------------------------------- pairwise functions


def test_pairwise_iou_hand_computed():
    b1 = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 5.0]]))
    b2 = Boxes(torch.tensor([[5.0, 5.0, 15.0, 15.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]]))
    iou = pairwise_iou(b1, b2)
    expected = torch.tensor([[25.0 / 175.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(iou, expected)
    torch.testing.assert_close(
        pairwise_intersection(b1, b2), torch.tensor([[25.0, 0.0, 100.0], [0.0, 0.0, 0.0]])
    )
    torch.testing.assert_close(pairwise_ioa(b1, b2), torch.tensor([[0.25, 0.0, 1.0], [0.0, 0.0, 0.0]]))


def test_pairwise_iou_vs_reference_and_torchvision():
    torchvision = pytest.importorskip("torchvision")
    b1 = random_boxes(37, 1)
    b2 = random_boxes(23, 2)
    b2[3] = b2[3, [2, 3, 0, 1]]  # an inverted box
    iou = pairwise_iou(Boxes(b1), Boxes(b2))
    torch.testing.assert_close(iou.double(), ref_pairwise_iou(b1, b2), atol=1e-6, rtol=1e-5)
    tv = torchvision.ops.box_iou(b1, b2)
    valid = torch.ones(23, dtype=torch.bool)
    valid[3] = False
    torch.testing.assert_close(iou[:, valid], tv[:, valid])
    iou64 = pairwise_iou(Boxes(b1.double()), Boxes(b2.double()))
    assert iou64.dtype == torch.float64
    torch.testing.assert_close(iou64, ref_pairwise_iou(b1, b2))
    half = pairwise_iou(Boxes(b1.half()), Boxes(b2.half()))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), ref_pairwise_iou(b1.half(), b2.half()), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3000, 50), (40, 3000), (1, 5)])
def test_pairwise_iou_blocked_matches_unblocked(monkeypatch, shape):
    n, m = shape
    b1 = random_boxes(n, 3)
    b2 = random_boxes(m, 4)
    monkeypatch.setattr(boxes_module, "_native_box_iou", lambda: None)  # the pure-torch path
    monkeypatch.setattr(boxes_module, "_IOU_BLOCK_ELEMENTS", 1 << 40)
    full = pairwise_iou(b1, b2)
    full_ioa = pairwise_ioa(b1, b2)
    monkeypatch.setattr(boxes_module, "_IOU_BLOCK_ELEMENTS", 997)
    torch.testing.assert_close(pairwise_iou(b1, b2), full, atol=0, rtol=0)
    torch.testing.assert_close(pairwise_ioa(b1, b2), full_ioa, atol=0, rtol=0)
    # and the full matrix against the float64 reference on a sample of rows
    rows = torch.arange(0, n, max(1, n // 20))
    torch.testing.assert_close(full[rows].double(), ref_pairwise_iou(b1[rows], b2), atol=1e-6, rtol=1e-5)


def test_pairwise_iou_large_default_path_matches_torch_path(monkeypatch):
    """Large CPU inputs use detcore.ops.box_iou when installed: same values as the torch path, including
    empty, inverted and identical boxes."""
    b1 = random_boxes(700, 5)
    b2 = random_boxes(90, 6)
    b1[0] = torch.tensor([3.0, 3.0, 3.0, 9.0])  # zero width
    b1[1] = torch.tensor([9.0, 9.0, 1.0, 1.0])  # inverted
    b2[0] = b1[5]  # identical
    b2[1] = torch.tensor([3.0, 3.0, 3.0, 9.0])  # zero width, equal to b1[0]
    for dtype in (torch.float32, torch.float64):
        default = pairwise_iou(Boxes(b1.to(dtype)), Boxes(b2.to(dtype)))
        assert default.dtype == dtype
        assert default[5, 0] == 1.0 and default[0, 1] == 0.0 and not default[1].any()
        torch.testing.assert_close(default.double(), ref_pairwise_iou(b1.to(dtype), b2.to(dtype)))
        with monkeypatch.context() as mp:
            mp.setattr(boxes_module, "_native_box_iou", lambda: None)
            torch_path = pairwise_iou(Boxes(b1.to(dtype)), Boxes(b2.to(dtype)))
        torch.testing.assert_close(default, torch_path, atol=0, rtol=0)
    half = pairwise_iou(Boxes(b1.half()), Boxes(b2.half()))
    assert half.dtype == torch.float32


def test_pairwise_iou_empty():
    assert pairwise_iou(Boxes([]), Boxes(random_boxes(3, 0))).shape == (0, 3)
    assert pairwise_iou(Boxes(random_boxes(3, 0)), Boxes([])).shape == (3, 0)


def test_pairwise_iou_errors():
    with pytest.raises(TypeError, match="boxes1 must be Boxes"):
        pairwise_iou(torch.zeros(3, 5), Boxes([]))
    with pytest.raises(ValueError, match="one device"):
        pairwise_iou(Boxes([]), Boxes(torch.zeros(0, 4, device="meta")))


# Sizes are 0 or >= 1e-6: a box whose area underflows to a subnormal or zero float64 has a self-IoU that is not 1
# (known limitation, hypothesis found [0, 0, 1, 2.2e-309]).
_size = st.one_of(st.just(0.0), st.floats(1e-6, 60))
box_strategy = st.tuples(st.floats(-50, 50), st.floats(-50, 50), _size, _size).map(
    lambda v: [v[0], v[1], v[0] + v[2], v[1] + v[3]]
)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(box_strategy, min_size=1, max_size=6), b=st.lists(box_strategy, min_size=1, max_size=6))
def test_pairwise_iou_properties(a, b):
    ba = Boxes(torch.tensor(a, dtype=torch.float64))
    bb = Boxes(torch.tensor(b, dtype=torch.float64))
    iou = pairwise_iou(ba, bb)
    torch.testing.assert_close(iou, pairwise_iou(bb, ba).T)
    assert bool(((iou >= 0) & (iou <= 1 + 1e-12)).all())
    self_iou = pairwise_iou(ba, ba).diagonal()
    nonempty = ba.nonempty()
    torch.testing.assert_close(self_iou[nonempty], torch.ones(int(nonempty.sum()), dtype=torch.float64))
    assert bool((self_iou[~nonempty] == 0).all())
    ioa = pairwise_ioa(ba, bb)
    assert bool(((ioa >= 0) & (ioa <= 1 + 1e-12)).all())


def test_pairwise_point_box_distance():
    points = torch.tensor([[1.0, 2.0], [20.0, 0.0]])
    boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 1.0, 4.0, 3.0], [15.0, -5.0, 25.0, 5.0]]))
    d = pairwise_point_box_distance(points, boxes)
    assert d.shape == (2, 3, 4)
    torch.testing.assert_close(d[0, 0], torch.tensor([1.0, 2.0, 9.0, 3.0]))
    torch.testing.assert_close(d[0, 1], torch.tensor([-1.0, 1.0, 3.0, 1.0]))
    torch.testing.assert_close(d[1, 2], torch.tensor([5.0, 5.0, 5.0, 5.0]))
    inside = (d > 0).all(dim=2)
    assert inside.tolist() == [[True, False, False], [False, False, True]]
    with pytest.raises(ValueError, match=r"points must be a Tensor\[N, 2\]"):
        pairwise_point_box_distance(torch.zeros(3, 3), boxes)


def test_matched_pairwise_iou():
    b1 = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]]))
    b2 = Boxes(torch.tensor([[5.0, 5.0, 15.0, 15.0], [3.0, 3.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]]))
    torch.testing.assert_close(matched_pairwise_iou(b1, b2), torch.tensor([25.0 / 175.0, 0.0, 1.0]))
    torch.testing.assert_close(matched_pairwise_iou(b1, b2), pairwise_iou(b1, b2).diagonal())
    with pytest.raises(ValueError, match="same length"):
        matched_pairwise_iou(b1, b2[0:2])


def test_torch_compile_fullgraph():
    def f(a, b):
        boxes = Boxes(a)
        boxes.clip((50, 60))
        return pairwise_iou(boxes, Boxes(b)), boxes.area()

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, 4, generator=g) * 100, torch.rand(5, 4, generator=g) * 100
    compiled = torch.compile(f, fullgraph=True, backend="eager")  # graph capture without codegen: fast
    for got, want in zip(compiled(a, b), f(a, b)):
        torch.testing.assert_close(got, want)


def test_torch_export_dynamic_count():
    class M(torch.nn.Module):
        def forward(self, a, b):
            boxes = Boxes(a)
            boxes.clip((50, 60))
            return pairwise_iou(boxes, Boxes(b))

    n = torch.export.Dim("n", min=2, max=100_000)
    program = torch.export.export(
        M(), (random_boxes(10, 0), random_boxes(5, 1)), dynamic_shapes={"a": {0: n}, "b": None}
    )
    for count in (10, 3000):
        a, b = random_boxes(count, 2), random_boxes(5, 3)
        torch.testing.assert_close(program.module()(a, b), M()(a, b))
