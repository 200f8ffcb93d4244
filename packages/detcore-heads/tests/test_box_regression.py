from __future__ import annotations

import math

import pytest
import torch

from detcore.heads import Box2BoxTransform, Box2BoxTransformLinear, Box2BoxTransformRotated
from detcore.heads.box_regression import _DEFAULT_SCALE_CLAMP, _dense_box_regression_loss
from detcore.structures import Boxes


def _random_boxes(n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 500
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 200 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _ref_get_deltas(src, tgt, weights):
    """float64 reference written from the R-CNN formulas."""
    wx, wy, ww, wh = weights
    sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    tw, th = tgt[:, 2] - tgt[:, 0], tgt[:, 3] - tgt[:, 1]
    scx, scy = src[:, 0] + sw / 2, src[:, 1] + sh / 2
    tcx, tcy = tgt[:, 0] + tw / 2, tgt[:, 1] + th / 2
    return torch.stack(
        [wx * (tcx - scx) / sw, wy * (tcy - scy) / sh, ww * torch.log(tw / sw), wh * torch.log(th / sh)],
        dim=1,
    )


def test_scale_clamp_default():
    assert math.isclose(_DEFAULT_SCALE_CLAMP, 4.135166556742356)
    assert Box2BoxTransform((1, 1, 1, 1)).scale_clamp == pytest.approx(math.log(1000 / 16))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip_and_reference(weights):
    gen = torch.Generator().manual_seed(0)
    src = _random_boxes(200, gen)
    tgt = _random_boxes(200, gen)
    t = Box2BoxTransform(weights)
    deltas = t.get_deltas(src, tgt)
    torch.testing.assert_close(deltas, _ref_get_deltas(src, tgt, weights))
    # boxes whose size ratio is within exp(scale_clamp) round-trip exactly
    torch.testing.assert_close(t.apply_deltas(deltas, src), tgt, atol=1e-8, rtol=0)
    # float32 round trip
    out32 = t.apply_deltas(deltas.float(), src.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), tgt, atol=1e-3, rtol=1e-5)


def test_hand_case():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    # centre (5, 10) -> (10, 5); size (10, 20) -> (20, 20)
    torch.testing.assert_close(t.apply_deltas(deltas, anchor), torch.tensor([[0.0, -5.0, 20.0, 15.0]]))


def test_clamping():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, -10.0]], dtype=torch.float64), anchor)
    w = out[0, 2] - out[0, 0]
    h = out[0, 3] - out[0, 1]
    torch.testing.assert_close(w, torch.tensor(1000.0, dtype=torch.float64))  # 16 * exp(log(1000/16))
    torch.testing.assert_close(h, torch.tensor(16 * math.exp(-10.0), dtype=torch.float64))  # not clamped
    t2 = Box2BoxTransform((1.0, 1.0, 1.0, 1.0), scale_clamp=1.0)
    out = t2.apply_deltas(torch.tensor([[0.0, 0.0, 5.0, 5.0]], dtype=torch.float64), anchor)
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(16 * math.e, dtype=torch.float64))


def test_k_class_deltas():
    gen = torch.Generator().manual_seed(1)
    boxes = _random_boxes(7, gen)
    deltas = torch.randn(7, 3 * 4, generator=gen, dtype=torch.float64)
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    out = t.apply_deltas(deltas, boxes)
    assert out.shape == (7, 12)
    for k in range(3):
        torch.testing.assert_close(
            out[:, 4 * k : 4 * k + 4], t.apply_deltas(deltas[:, 4 * k : 4 * k + 4], boxes)
        )
    # half precision deltas decode in float32
    assert t.apply_deltas(deltas.half(), boxes.float()).dtype == torch.float32
    # empty input
    assert t.apply_deltas(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)


def test_bad_inputs():
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="deltas"):
        t.apply_deltas(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="boxes"):
        t.apply_deltas(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="src_boxes"):
        t.get_deltas(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="weights"):
        Box2BoxTransform((1.0, 1.0, 1.0))


def _random_rotated(n, gen):
    ctr = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 400
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100 + 2
    ang = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 360 - 180
    return torch.cat([ctr, wh, ang], dim=1)


def test_rotated_round_trip():
    gen = torch.Generator().manual_seed(2)
    src = _random_rotated(100, gen)
    tgt = _random_rotated(100, gen)
    weights = (10.0, 10.0, 5.0, 5.0, 1.0)
    t = Box2BoxTransformRotated(weights)
    deltas = t.get_deltas(src, tgt)
    # reference for the angle delta: radians, normalised to [-180, 180) degrees first
    da = (tgt[:, 4] - src[:, 4] + 180.0) % 360.0 - 180.0
    torch.testing.assert_close(deltas[:, 4], da * math.pi / 180.0)
    torch.testing.assert_close(deltas[:, 0], 10.0 * (tgt[:, 0] - src[:, 0]) / src[:, 2])
    out = t.apply_deltas(deltas, src)
    torch.testing.assert_close(out[:, :4], tgt[:, :4], atol=1e-8, rtol=0)
    ang_diff = (out[:, 4] - tgt[:, 4] + 180.0) % 360.0 - 180.0
    assert ang_diff.abs().max() < 1e-8
    assert (out[:, 4] >= -180).all() and (out[:, 4] < 180).all()
    # a delta of 2*pi rad leaves the angle unchanged (normalised)
    one = torch.tensor([[0.0, 0.0, 10.0, 10.0, 170.0]], dtype=torch.float64)
    res = t.apply_deltas(torch.tensor([[0.0, 0.0, 0.0, 0.0, 20.0 * math.pi / 180]], dtype=torch.float64), one)
    torch.testing.assert_close(res[0, 4], torch.tensor(-170.0, dtype=torch.float64))
    # k classes
    k2 = t.apply_deltas(torch.cat([deltas, deltas], dim=1), src)
    torch.testing.assert_close(k2[:, 5:], out)


def test_linear_transform():
    gen = torch.Generator().manual_seed(3)
    ctr = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 300
    size = torch.rand(50, 1, generator=gen, dtype=torch.float64) * 30 + 4
    anchors = torch.cat([ctr - size / 2, ctr + size / 2], dim=1)
    # targets that contain the anchor centres
    lt = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 50
    rb = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 50
    tgt = torch.cat([ctr - lt, ctr + rb], dim=1)
    for normalize in (True, False):
        t = Box2BoxTransformLinear(normalize_by_size=normalize)
        deltas = t.get_deltas(anchors, tgt)
        expected = torch.cat([lt, rb], dim=1) / (size if normalize else 1.0)
        torch.testing.assert_close(deltas, expected)
        torch.testing.assert_close(t.apply_deltas(deltas, anchors), tgt)
        # negative deltas are clamped to 0 (valid boxes), k classes supported
        two = t.apply_deltas(torch.cat([-deltas, deltas], dim=1), anchors)
        torch.testing.assert_close(two[:, :4], torch.cat([ctr, ctr], dim=1))
        torch.testing.assert_close(two[:, 4:], tgt)


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou", "diou", "ciou"])
def test_dense_box_regression_loss(loss_type):
    gen = torch.Generator().manual_seed(4)
    anchors = [Boxes(_random_boxes(6, gen).float()), Boxes(_random_boxes(4, gen).float())]
    gt = [_random_boxes(10, gen).float() for _ in range(2)]
    pred = [
        torch.randn(2, 6, 4, generator=gen, requires_grad=True),
        torch.randn(2, 4, 4, generator=gen, requires_grad=True),
    ]
    fg = torch.rand(2, 10, generator=gen) > 0.5
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    loss = _dense_box_regression_loss(
        anchors, t, pred, gt, fg, box_reg_loss_type=loss_type, smooth_l1_beta=0.0
    )
    all_anchors = torch.cat([a.tensor for a in anchors])
    p = torch.cat([x.detach() for x in pred], dim=1)
    if loss_type == "smooth_l1":
        target = torch.stack([t.get_deltas(all_anchors, g) for g in gt])
        expected = (p - target).abs()[fg].sum()
    else:
        from detcore.ops import ciou_loss, diou_loss, giou_loss

        fn = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}[loss_type]
        boxes = torch.stack([t.apply_deltas(x, all_anchors) for x in p])
        expected = fn(boxes[fg], torch.stack(gt)[fg], reduction="sum")
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in pred)
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        _dense_box_regression_loss(anchors, t, pred, gt, fg, box_reg_loss_type="l2")
