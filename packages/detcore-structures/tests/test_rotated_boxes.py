from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detcore.structures import Boxes, BoxMode, RotatedBoxes


def corners(box: torch.Tensor) -> torch.Tensor:
    """Float64 corners [4, 2] of a rotated box (angle CCW in image space, y down)."""
    cx, cy, w, h, a = (float(v) for v in box)
    t = math.radians(a)
    c, s = math.cos(t), math.sin(t)
    pts = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        pts.append((cx + c * dx + s * dy, cy - s * dx + c * dy))
    return torch.tensor(pts, dtype=torch.float64)


def test_construction_and_errors():
    assert RotatedBoxes([]).tensor.shape == (0, 5)
    assert RotatedBoxes([[1, 2, 3, 4, 5]]).tensor.dtype == torch.float32
    assert RotatedBoxes(torch.zeros(2, 5, dtype=torch.float64)).tensor.dtype == torch.float64
    with pytest.raises(ValueError, match=r"RotatedBoxes: tensor must have shape \[N, 5\]"):
        RotatedBoxes(torch.zeros(3, 4))
    t = torch.zeros(2, 5)
    t[0, 4] = float("nan")
    with pytest.raises(ValueError, match=r"finite.*rows \[0\]"):
        RotatedBoxes(t)


def test_methods_hand_computed():
    t = torch.tensor([[10.0, 20.0, 4.0, 6.0, 30.0], [0.0, 0.0, 0.0, 2.0, 0.0], [5.0, 5.0, 2.0, 2.0, 370.0]])
    b = RotatedBoxes(t)
    torch.testing.assert_close(b.area(), torch.tensor([24.0, 0.0, 4.0]))
    torch.testing.assert_close(b.get_centers(), t[:, :2])
    assert b.nonempty().tolist() == [True, False, True]
    assert b.nonempty(threshold=3.0).tolist() == [True, False, False]
    c = b.clone()
    c.normalize_angles()
    torch.testing.assert_close(c.tensor[:, 4], torch.tensor([30.0, 0.0, 10.0]))
    assert b.tensor[2, 4] == 370.0
    ang = RotatedBoxes(torch.tensor([[0, 0, 1, 1, a] for a in (180.0, -180.0, 540.0, -181.0, 179.5)]))
    ang.normalize_angles()
    torch.testing.assert_close(ang.tensor[:, 4], torch.tensor([-180.0, -180.0, -180.0, 179.0, 179.5]))


def test_inside_box():
    # a 90-degree box: its hull is 6 wide and 4 tall
    b = RotatedBoxes(torch.tensor([[5.0, 5.0, 4.0, 6.0, 90.0]]))
    assert b.inside_box((8, 9)).tolist() == [True]  # hull x in [2, 8), y in [3, 7)
    assert b.inside_box((7, 9)).tolist() == [False]
    assert b.inside_box((8, 8)).tolist() == [False]
    assert b.inside_box((8, 8), boundary_threshold=1).tolist() == [True]


def test_clip_only_near_horizontal():
    t = torch.tensor(
        [
            [5.0, 5.0, 20.0, 4.0, 0.5],  # near horizontal: clipped in x to [0, 10]
            [5.0, 5.0, 20.0, 4.0, 30.0],  # rotated: untouched
            [5.0, 5.0, 20.0, 4.0, 360.5],  # normalized to 0.5, clipped
            [-5.0, 2.0, 4.0, 4.0, -1.0],  # entirely left of the image: width 0
        ]
    )
    b = RotatedBoxes(t)
    b.clip((8, 10))
    expected = torch.tensor(
        [
            [5.0, 5.0, 10.0, 4.0, 0.5],
            [5.0, 5.0, 20.0, 4.0, 30.0],
            [5.0, 5.0, 10.0, 4.0, 0.5],
            [0.0, 2.0, 0.0, 4.0, -1.0],
        ]
    )
    torch.testing.assert_close(b.tensor, expected)
    b2 = RotatedBoxes(t)
    b2.clip((8, 10), clip_angle_threshold=45.0)
    assert b2.tensor[1, 2] == 10.0


def test_scale_equal_factors_scales_corners():
    t = torch.tensor([[10.0, 20.0, 4.0, 6.0, 30.0], [3.0, -2.0, 5.0, 1.0, -120.0]], dtype=torch.float64)
    b = RotatedBoxes(t.clone())
    b.scale(2.5, 2.5)
    for i in range(2):
        torch.testing.assert_close(corners(b.tensor[i]), corners(t[i]) * 2.5)


def test_scale_formula_unequal():
    # angle 90: width scales with sy, height with sx; angle 0: width with sx
    b = RotatedBoxes(
        torch.tensor([[10.0, 20.0, 4.0, 6.0, 90.0], [10.0, 20.0, 4.0, 6.0, 0.0]], dtype=torch.float64)
    )
    b.scale(2.0, 3.0)
    torch.testing.assert_close(
        b.tensor,
        torch.tensor([[20.0, 60.0, 12.0, 12.0, 90.0], [20.0, 60.0, 8.0, 18.0, 0.0]], dtype=torch.float64),
    )
    # general angle: w' = w sqrt((sx c)^2 + (sy s)^2), h' = h sqrt((sx s)^2 + (sy c)^2), a' = atan2(sx s, sy c)
    a = 30.0
    b = RotatedBoxes(torch.tensor([[0.0, 0.0, 4.0, 6.0, a]], dtype=torch.float64))
    b.scale(2.0, 0.5)
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    expected = [
        0.0,
        0.0,
        4 * math.hypot(2 * c, 0.5 * s),
        6 * math.hypot(2 * s, 0.5 * c),
        math.degrees(math.atan2(2 * s, 0.5 * c)),
    ]
    torch.testing.assert_close(b.tensor[0], torch.tensor(expected, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(
    cx=st.floats(-100, 100),
    cy=st.floats(-100, 100),
    w=st.floats(0, 50),
    h=st.floats(0, 50),
    a=st.floats(-360, 360),
)
def test_inside_box_agrees_with_hull(cx, cy, w, h, a):
    box = torch.tensor([[cx, cy, w, h, a]], dtype=torch.float64)
    hull = Boxes(BoxMode.convert(box, BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS))
    pts = corners(box[0])
    torch.testing.assert_close(hull.tensor[0, :2], pts.min(0).values, atol=1e-9, rtol=0)
    # inside_box of rotated boxes == inside_box of their hull (away from exact ties)
    size = (150, 170)
    rb = RotatedBoxes(box)
    assert rb.inside_box(size).tolist() == hull.inside_box(size).tolist() or any(
        abs(float(v) - edge) < 1e-9 for v in hull.tensor[0] for edge in (0.0, 150.0, 170.0)
    )


def test_indexing_cat_iter_repr_to():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(7, 5, generator=g) * 50
    b = RotatedBoxes(t)
    assert len(b) == 7
    torch.testing.assert_close(b[3].tensor, t[3:4])
    torch.testing.assert_close(b[np.int64(-1)].tensor, t[6:7])
    torch.testing.assert_close(b[2:5].tensor, t[2:5])
    m = t[:, 0] > 25
    torch.testing.assert_close(b[m].tensor, t[m])
    idx = torch.tensor([6, 1, 1])
    torch.testing.assert_close(b[idx].tensor, t[idx])
    assert [r.shape for r in b] == [torch.Size([5])] * 7
    assert repr(b).startswith("RotatedBoxes(tensor(")
    torch.testing.assert_close(RotatedBoxes.cat([b[0:2], b[5:]]).tensor, t[[0, 1, 5, 6]])
    assert RotatedBoxes.cat([]).tensor.shape == (0, 5)
    with pytest.raises(TypeError, match="must be RotatedBoxes"):
        RotatedBoxes.cat([b, Boxes([])])
    assert b.to(torch.float64).tensor.dtype == torch.float64
    assert b.device.type == "cpu"
