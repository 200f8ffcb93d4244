from __future__ import annotations

import math

import pytest
import torch

from detcore.heads import FCOSHead, FCOSHeadConfig, FCOSLogic, build_component
from detcore.heads.dense import fcos_anchor_generator, fcos_ctrness_targets, fcos_label_anchors
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, Instances

STRIDES = (8, 16, 32)


def _shapes(channels: int, strides=STRIDES) -> list[ShapeSpec]:
    return [ShapeSpec(channels=channels, stride=s) for s in strides]


def _inst(boxes, classes, size=(256, 256)) -> Instances:
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def _anchors(size: int = 256):
    gen = fcos_anchor_generator(STRIDES)
    feats = [torch.zeros(1, 1, size // s, size // s) for s in STRIDES]
    return gen(feats)


def _level_of(index: int, size: int = 256) -> tuple[int, int, int]:
    """(level, row, col) of a flat anchor index."""
    for lvl, s in enumerate(STRIDES):
        n = (size // s) ** 2
        if index < n:
            return lvl, index // (size // s), index % (size // s)
        index -= n
    raise AssertionError


def test_head_state_dict_and_shapes():
    head = build_component("dense_head", "FCOSHead", FCOSHeadConfig(num_classes=5), _shapes(32))
    sd = {k: list(v.shape) for k, v in head.state_dict().items()}
    expected = {}
    for sub in ("cls_subnet", "bbox_subnet"):
        for i in range(4):
            expected[f"{sub}.{3 * i}.weight"] = [32, 32, 3, 3]
            expected[f"{sub}.{3 * i}.bias"] = [32]
            expected[f"{sub}.{3 * i + 1}.weight"] = [32]  # GroupNorm
            expected[f"{sub}.{3 * i + 1}.bias"] = [32]
    expected.update(
        {
            "cls_score.weight": [5, 32, 3, 3],
            "cls_score.bias": [5],
            "bbox_pred.weight": [4, 32, 3, 3],
            "bbox_pred.bias": [4],
            "ctrness.weight": [1, 32, 3, 3],
            "ctrness.bias": [1],
        }
    )
    assert sd == expected
    assert isinstance(head.cls_subnet[1], torch.nn.GroupNorm) and head.cls_subnet[1].num_groups == 32
    cfg = FCOSHeadConfig()
    assert (cfg.num_classes, cfg.num_convs, cfg.norm, cfg.prior_prob) == (80, 4, "GN", 0.01)
    torch.manual_seed(0)
    feats = [torch.randn(2, 32, 16 // (2**i), 12 // (2**i)) for i in range(3)]
    logits, deltas, ctr = head(feats)
    assert [list(x.shape) for x in logits] == [[2, 5, 16, 12], [2, 5, 8, 6], [2, 5, 4, 3]]
    assert [list(x.shape) for x in deltas] == [[2, 4, 16, 12], [2, 4, 8, 6], [2, 4, 4, 3]]
    assert [list(x.shape) for x in ctr] == [[2, 1, 16, 12], [2, 1, 8, 6], [2, 1, 4, 3]]
    with pytest.raises(ValueError, match="num_anchors"):
        FCOSHead.from_config(None, _shapes(32), num_anchors=9)


def test_anchor_points():
    anchors = _anchors(64)
    # stride-sized boxes centred at (j + 0.5) * stride
    assert torch.equal(anchors[0].tensor[0], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    assert torch.equal(anchors[1].get_centers()[1], torch.tensor([24.0, 8.0]))


def test_matching_small_box_centre_on_first_level():
    anchors = _anchors()
    # gt [32, 32, 72, 72], centre (52, 52), max side distance <= 40 -> level 0 (range [0, 64))
    # level-0 points within 1.5 * 8 = 12 of the centre (strictly) and inside: x, y in {44, 52, 60}
    labels, boxes = fcos_label_anchors(anchors, [_inst([[32, 32, 72, 72]], [4])], num_classes=6)
    pos = torch.nonzero(labels[0] != 6).flatten().tolist()
    got = sorted(_level_of(i) for i in pos)
    assert got == sorted((0, r, c) for r in (5, 6, 7) for c in (5, 6, 7))
    assert (labels[0][pos] == 4).all()
    # the point at the centre of the box is positive and matched to it
    centre = 6 * 32 + 6
    assert labels[0][centre] == 4
    assert torch.equal(boxes[0][centre], torch.tensor([32.0, 32.0, 72.0, 72.0]))
    # no ignored points in FCOS
    assert set(labels[0].tolist()) == {4, 6}


def test_matching_large_box_on_last_level():
    anchors = _anchors()
    # gt [0, 0, 300, 300], centre 150: level-2 points (16 + 32 j) within 48: {112, 144, 176}; their largest
    # side distance (>= 150) is above 4 * 32 = 128, and level 1's upper bound is 8 * 16 = 128
    labels, _ = fcos_label_anchors(anchors, [_inst([[0, 0, 300, 300]], [1])], num_classes=3)
    pos = torch.nonzero(labels[0] != 3).flatten().tolist()
    assert sorted(_level_of(i) for i in pos) == sorted((2, r, c) for r in (3, 4, 5) for c in (3, 4, 5))


def test_matching_smallest_box_wins_and_empty():
    anchors = _anchors()
    big = [20, 20, 84, 84]  # centre 52, max distance at (52, 52) is 32 -> level 0
    small = [40, 40, 64, 64]  # centre 52
    labels, boxes = fcos_label_anchors(anchors, [_inst([big, small], [0, 1])], num_classes=2)
    centre = 6 * 32 + 6
    assert labels[0][centre] == 1
    assert torch.equal(boxes[0][centre], torch.tensor(small, dtype=torch.float32))
    # (44, 60) is inside both but only within the sampling radius of both; smaller wins too
    assert labels[0][7 * 32 + 5] == 1
    labels, boxes = fcos_label_anchors(anchors, [_inst([], [])], num_classes=2)
    assert (labels[0] == 2).all() and labels[0].dtype == torch.int64 and torch.count_nonzero(boxes[0]) == 0


def _match_reference(points, sizes, level_ids, num_levels, gt, radius=1.5):
    """Pure-python FCOS rule for one image: index of the matched gt per point (-1: none)."""
    out = []
    for (x, y), s, lvl in zip(points, sizes, level_ids):
        best, best_area = -1, None
        for m, (x0, y0, x1, y1) in enumerate(gt):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if not (abs(x - cx) < radius * s and abs(y - cy) < radius * s):
                continue
            d = (x - x0, y - y0, x1 - x, y1 - y)
            if min(d) <= 0:
                continue
            lo = 0.0 if lvl == 0 else 4 * s
            hi = math.inf if lvl == num_levels - 1 else 8 * s
            if not (lo < max(d) < hi):
                continue
            area = (x1 - x0) * (y1 - y0)
            if best_area is None or area < best_area:
                best, best_area = m, area
        out.append(best)
    return out


def test_matching_random_vs_reference():
    g = torch.Generator().manual_seed(0)
    anchors = _anchors(256)
    pts = Boxes.cat(anchors).get_centers().tolist()
    sizes = [float(b[2] - b[0]) for b in Boxes.cat(anchors).tensor]
    level_ids = [lvl for lvl, a in enumerate(anchors) for _ in range(len(a))]
    matched_levels = set()
    for _ in range(5):
        xy = torch.rand(6, 2, generator=g) * 100
        wh = torch.rand(6, 2, generator=g) * 200 + 4
        gt = torch.cat([xy, xy + wh], dim=1).round()
        classes = torch.arange(6)
        labels, _ = fcos_label_anchors(anchors, [_inst(gt.tolist(), classes.tolist())], num_classes=6)
        ref = _match_reference(pts, sizes, level_ids, len(anchors), gt.tolist())
        expected = [6 if m < 0 else m for m in ref]
        assert labels[0].tolist() == expected
        matched_levels.update(level_ids[i] for i, m in enumerate(ref) if m >= 0)
    assert matched_levels == {0, 1, 2}  # the cases exercise every level


def test_ctrness_targets_hand_computed():
    anchors = _anchors()
    _, boxes = fcos_label_anchors(anchors, [_inst([[32, 32, 72, 72]], [0])], num_classes=1)
    ctr = fcos_ctrness_targets(anchors, boxes)
    assert ctr.shape == (1, sum(len(a) for a in anchors))
    # point (44, 44): l = t = 12, r = b = 28 -> sqrt((12/28) ** 2) = 12/28
    assert ctr[0, 5 * 32 + 5].item() == pytest.approx(12.0 / 28.0)
    # point (52, 44): l = r = 20, t = 12, b = 28 -> sqrt(12/28)
    assert ctr[0, 5 * 32 + 6].item() == pytest.approx(math.sqrt(12.0 / 28.0))
    assert ctr[0, 6 * 32 + 6].item() == pytest.approx(1.0)


def test_losses_values():
    torch.manual_seed(0)
    anchors = _anchors(64)
    num_classes = 2
    logic = FCOSLogic(num_classes=num_classes)
    gt = [_inst([[8, 8, 40, 36]], [1], (64, 64))]
    gt_labels, gt_boxes = logic.label_anchors(anchors, gt)
    r = sum(len(a) for a in anchors)
    logits = [torch.randn(1, len(a), num_classes) for a in anchors]
    deltas = [torch.rand(1, len(a), 4) + 0.5 for a in anchors]
    ctr = [torch.randn(1, len(a), 1) for a in anchors]
    losses = logic.losses(anchors, logits, gt_labels, deltas, gt_boxes, ctr)
    pos = gt_labels[0] != num_classes
    num_pos = int(pos.sum())
    assert num_pos > 0
    norm = 0.9 * 300 + 0.1 * num_pos
    assert logic.loss_normalizer.value == pytest.approx(norm)

    # reference, float64
    x = torch.cat(logits, dim=1)[0].double()
    t = torch.nn.functional.one_hot(gt_labels[0], num_classes + 1)[:, :-1].double()
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).sum()
    assert losses["loss_fcos_cls"].item() == pytest.approx(focal.item() / norm, rel=1e-5)

    a = torch.cat([b.tensor for b in anchors]).double()[pos]
    d = torch.cat(deltas, dim=1)[0].double()[pos] * (a[:, 2:3] - a[:, 0:1])  # normalised by the stride
    cx, cy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
    pb = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=1)
    g = torch.tensor([8.0, 8.0, 40.0, 36.0], dtype=torch.float64).expand_as(pb)
    iw = (torch.min(pb[:, 2], g[:, 2]) - torch.max(pb[:, 0], g[:, 0])).clamp(min=0)
    ih = (torch.min(pb[:, 3], g[:, 3]) - torch.max(pb[:, 1], g[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1]) + 32 * 28 - inter
    cw = torch.max(pb[:, 2], g[:, 2]) - torch.min(pb[:, 0], g[:, 0])
    ch = torch.max(pb[:, 3], g[:, 3]) - torch.min(pb[:, 1], g[:, 1])
    giou = inter / union - (cw * ch - union) / (cw * ch)
    assert losses["loss_fcos_loc"].item() == pytest.approx((1 - giou).sum().item() / norm, rel=1e-4)

    l_, t_, r_, b_ = cx - 8, cy - 8, 40 - cx, 36 - cy
    ctr_t = torch.sqrt(torch.min(l_, r_) / torch.max(l_, r_) * torch.min(t_, b_) / torch.max(t_, b_))
    c = torch.cat(ctr, dim=1)[0, :, 0].double()[pos]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(c, ctr_t, reduction="sum")
    assert losses["loss_fcos_ctr"].item() == pytest.approx(bce.item() / norm, rel=1e-5)
    assert r == 64 + 16 + 4


def test_inference_scores_are_sqrt_cls_times_ctr():
    anchors = _anchors(64)
    num_classes = 3
    logits = [torch.full((1, num_classes, 64 // s, 64 // s), -10.0) for s in STRIDES]
    deltas = [torch.zeros((1, 4, 64 // s, 64 // s)) for s in STRIDES]
    ctr = [torch.zeros((1, 1, 64 // s, 64 // s)) for s in STRIDES]
    # level 1 (stride 16), row 1, col 2: centre (40, 24); class 2
    logits[1][0, 2, 1, 2] = 3.0
    ctr[1][0, 0, 1, 2] = 1.0
    deltas[1][0, :, 1, 2] = torch.tensor([1.0, 0.5, 2.0, 1.0])  # in strides
    logic = FCOSLogic(num_classes=num_classes)
    (res,) = logic.forward_inference(anchors, [logits, deltas, ctr], [(64, 64)])
    assert len(res) == 1
    expected_score = math.sqrt(
        torch.sigmoid(torch.tensor(3.0)).item() * torch.sigmoid(torch.tensor(1.0)).item()
    )
    assert res.scores.item() == pytest.approx(expected_score)
    assert res.pred_classes.tolist() == [2]
    assert torch.allclose(res.pred_boxes.tensor[0], torch.tensor([40.0 - 16, 24.0 - 8, 40.0 + 32, 24.0 + 16]))
    # score threshold 0.2 is on sqrt(cls * ctr): sigmoid(-10) * ... everywhere else is far below
    ctr[1][0, 0, 1, 2] = -12.0  # sqrt(0.95 * 6e-6) = 0.0024 < 0.2
    (res,) = logic.forward_inference(anchors, [logits, deltas, ctr], [(64, 64)])
    assert len(res) == 0


@pytest.mark.parametrize("num_gt", [3, 1, 0])
def test_training_gradients(num_gt):
    torch.manual_seed(num_gt)
    num_classes = 3
    head = FCOSHead(input_shape=_shapes(32), num_classes=num_classes, conv_dims=[32, 32], norm="GN")
    feats = [torch.randn(2, 32, 64 // s, 64 // s) for s in STRIDES]
    anchors = fcos_anchor_generator(STRIDES)(feats)
    boxes = [[4, 6, 30, 40], [10, 10, 62, 60], [40, 2, 63, 20]][:num_gt]
    gt = [_inst(boxes, [0, 2, 1][:num_gt], (64, 64)), _inst(boxes[:1], [1][: min(num_gt, 1)], (64, 64))]
    logic = FCOSLogic(num_classes=num_classes)
    losses = logic.forward_training(anchors, head(feats), gt)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if num_gt > 0:
        assert losses["loss_fcos_loc"].item() > 0 and losses["loss_fcos_ctr"].item() > 0
        assert torch.count_nonzero(head.ctrness.weight.grad) > 0
        assert torch.count_nonzero(head.bbox_pred.weight.grad) > 0
    else:
        assert losses["loss_fcos_loc"].item() == 0.0 and losses["loss_fcos_ctr"].item() == 0.0
    assert torch.count_nonzero(head.cls_score.weight.grad) > 0
