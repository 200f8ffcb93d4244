"""Rotated heads: RRPN (anchors, rotated-IoU labelling, proposals, losses and gradients), RROIHeads (training,
inference, rotated NMS on a hand case) and fast_rcnn_inference_rotated against a float64 reference (with a
polygon-clipping rotated IoU and greedy NMS written here)."""

from __future__ import annotations

import math

import pytest
import torch

from detcore.heads.anchor_generator import RotatedAnchorGeneratorConfig
from detcore.heads.box_regression import Box2BoxTransformRotated
from detcore.heads.build import build_component, build_proposal_generator
from detcore.heads.proposal_generator import RRPN, RRPNConfig, find_top_rrpn_proposals
from detcore.heads.roi_heads import (
    FastRCNNConvFCHeadConfig,
    RotatedFastRCNNOutputLayers,
    RROIHeads,
    RROIHeadsConfig,
    fast_rcnn_inference_rotated,
)
from detcore.ops import ShapeSpec
from detcore.structures import ImageList, Instances, RotatedBoxes, pairwise_iou_rotated

H, W = 64, 96
NUM_CLASSES = 3


# ---------------------------------------------------------------- float64 reference (rotated IoU, NMS, clip)
def _corners(b):
    cx, cy, w, h, a = (float(v) for v in b)
    t = math.radians(a)
    c, s = math.cos(t), math.sin(t)
    pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _area(poly):
    n = len(poly)
    return (
        abs(sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1] for i in range(n))) / 2
    )


def _clip_poly(subject, clip):
    """Sutherland-Hodgman: convex ``subject`` clipped by convex ``clip`` (both counter-clockwise or both cw)."""
    orient = (
        1.0
        if sum(clip[i][0] * clip[(i + 1) % 4][1] - clip[(i + 1) % 4][0] * clip[i][1] for i in range(4)) > 0
        else -1.0
    )
    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        inp, out = out, []
        if not inp:
            break

        def side(p, a=a, b=b):
            return orient * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))

        for j in range(len(inp)):
            p, q = inp[j], inp[(j + 1) % len(inp)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def _iou_rotated_ref(b1, b2):
    p1, p2 = _corners(b1), _corners(b2)
    inter = _clip_poly(p1, p2)
    ia = _area(inter) if len(inter) >= 3 else 0.0
    union = float(b1[2] * b1[3] + b2[2] * b2[3]) - ia
    return ia / union if union > 0 else 0.0


def _clip_ref(b, h, w):
    b = b.clone()
    b[4] = (b[4] + 180.0) % 360.0 - 180.0
    if abs(float(b[4])) <= 1.0:
        x1 = (b[0] - b[2] / 2).clamp(0, w)
        y1 = (b[1] - b[3] / 2).clamp(0, h)
        x2 = (b[0] + b[2] / 2).clamp(0, w)
        y2 = (b[1] + b[3] / 2).clamp(0, h)
        b[0], b[1] = (x1 + x2) / 2, (y1 + y2) / 2
        b[2], b[3] = torch.minimum(b[2], x2 - x1), torch.minimum(b[3], y2 - y1)
    return b


def _inference_ref(boxes, scores, image_shape, score_thresh, nms_thresh, topk):
    """float64 reference of one image: per (proposal, class) candidate above the threshold, clip, greedy
    per-class NMS, then sort by score and keep top-k."""
    boxes, scores = boxes.double(), scores.double()
    h, w = image_shape
    k = scores.shape[1] - 1
    per_class = boxes.shape[1] // 5 > 1
    kept = []
    for c in range(k):
        cands = [
            (
                float(scores[r, c]),
                r,
                _clip_ref(boxes[r, 5 * c : 5 * c + 5] if per_class else boxes[r, :5], h, w),
            )
            for r in range(boxes.shape[0])
            if scores[r, c] > score_thresh
        ]
        cands.sort(key=lambda x: -x[0])
        chosen = []
        for s, r, b in cands:
            if all(_iou_rotated_ref(b.tolist(), cb.tolist()) <= nms_thresh for _, _, cb in chosen):
                chosen.append((s, r, b))
        kept += [(s, r, c, b) for s, r, b in chosen]
    kept.sort(key=lambda x: -x[0])
    if topk >= 0:
        kept = kept[:topk]
    return kept


def test_reference_iou_sanity():
    assert _iou_rotated_ref([0, 0, 10, 10, 0], [0, 0, 10, 10, 90]) == pytest.approx(1.0)
    # a square and its 45-degree rotation overlap in a regular octagon of area 2 (sqrt 2 - 1) s^2
    octagon = 2 * (math.sqrt(2) - 1) * 100
    assert _iou_rotated_ref([0, 0, 10, 10, 0], [0, 0, 10, 10, 45]) == pytest.approx(octagon / (200 - octagon))
    assert _iou_rotated_ref([0, 0, 20, 10, 0], [0, 0, 20, 10, 90]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("topk", [-1, 5])
@pytest.mark.parametrize("class_specific", [True, False])
def test_fast_rcnn_inference_rotated_matches_float64_reference(topk, class_specific):
    g = torch.Generator().manual_seed(0)
    r = 14
    nb = NUM_CLASSES if class_specific else 1
    ctr = torch.rand(r, nb, 2, generator=g) * torch.tensor([W + 20.0, H + 20.0]) - 10
    # a few proposals share a centre so that NMS has something to suppress
    ctr[r // 2 :] = ctr[: r - r // 2] + torch.rand(r - r // 2, nb, 2, generator=g) * 3
    wh = torch.rand(r, nb, 2, generator=g) * 30 + 5
    ang = torch.rand(r, nb, 1, generator=g) * 400 - 200
    ang[::3] = torch.rand(len(ang[::3]), nb, 1, generator=g) * 1.6 - 0.8  # nearly horizontal: clipped
    boxes = torch.cat([ctr, wh, ang], dim=2).reshape(r, nb * 5)
    scores = torch.softmax(torch.randn(r, NUM_CLASSES + 1, generator=g) * 2, dim=1)
    out, kept_idx = fast_rcnn_inference_rotated([boxes], [scores], [(H, W)], 0.05, 0.3, topk)
    ref = _inference_ref(boxes, scores, (H, W), 0.05, 0.3, topk)
    got = out[0]
    assert isinstance(got.pred_boxes, RotatedBoxes)
    assert len(got) == len(ref) > 0
    torch.testing.assert_close(got.scores.double(), torch.tensor([x[0] for x in ref], dtype=torch.float64))
    assert got.pred_classes.tolist() == [x[2] for x in ref]
    assert kept_idx[0].tolist() == [x[1] for x in ref]
    torch.testing.assert_close(
        got.pred_boxes.tensor.double(), torch.stack([x[3] for x in ref]), rtol=1e-5, atol=1e-4
    )


def test_fast_rcnn_inference_rotated_nms_hand_case():
    #            x   y   w   h  angle
    a = [50.0, 30.0, 20.0, 10.0, 0.0]  # kept (best)
    b = [52.0, 30.0, 20.0, 10.0, 0.0]  # IoU(a) = 180 / 220 > 0.5: suppressed
    c = [50.0, 30.0, 20.0, 10.0, 90.0]  # IoU(a) = 100 / 300 < 0.5: kept
    e = [50.0, 30.0, 20.0, 10.0, 180.0]  # same rectangle as a (IoU 1): suppressed
    f = [50.0, 30.0, 10.0, 20.0, 90.0]  # a rotated by 90: same rectangle as a, suppressed (xyxy IoU is 1/3)
    boxes = torch.tensor([a, b, c, e, f, b])
    s = torch.zeros(6, 3)
    s[:5, 0] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    s[5, 1] = 0.4  # box b again, but class 1: NMS is per class, kept
    s[:, 2] = 1 - s.sum(dim=1)
    out, kept = fast_rcnn_inference_rotated([boxes], [s], [(60, 100)], 0.05, 0.5, -1)
    assert kept[0].tolist() == [0, 2, 5]
    assert out[0].pred_classes.tolist() == [0, 0, 1]
    torch.testing.assert_close(out[0].scores, torch.tensor([0.9, 0.7, 0.4]))
    # c, angle 90, is not clipped; a (angle 0) is clipped to the image but lies inside it
    torch.testing.assert_close(out[0].pred_boxes.tensor, torch.tensor([a, c, b]))


def test_fast_rcnn_inference_rotated_errors():
    with pytest.raises(ValueError, match="boxes"):
        fast_rcnn_inference_rotated([torch.zeros(2, 4)], [torch.zeros(2, 3)], [(10, 10)], 0.05, 0.5, 10)
    with pytest.raises(ValueError, match="one entry per image"):
        fast_rcnn_inference_rotated([torch.zeros(2, 5)], [], [(10, 10)], 0.05, 0.5, 10)


# ---------------------------------------------------------------- RRPN
def _rrpn_cfg(**kw) -> RRPNConfig:
    return RRPNConfig(
        in_features=("p3", "p4"),
        anchor_generator=RotatedAnchorGeneratorConfig(
            sizes=((16.0,), (32.0,)), aspect_ratios=((0.5, 1.0),), angles=((-60.0, 0.0, 60.0),)
        ),
        batch_size_per_image=64,
        pre_nms_topk_train=50,
        post_nms_topk_train=20,
        pre_nms_topk_test=40,
        post_nms_topk_test=15,
        **kw,
    )


_RRPN_SHAPES = {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=8, stride=16)}


def _rrpn(**kw) -> RRPN:
    torch.manual_seed(0)
    model = build_proposal_generator(_rrpn_cfg(**kw), _RRPN_SHAPES, name="RRPN")
    for p in model.rpn_head.parameters():  # make the predictions less uniform than the N(0, 0.01) init
        torch.nn.init.normal_(p, std=0.1)
    return model


def _rrpn_features(n=2):
    g = torch.Generator().manual_seed(1)
    return {
        "p3": torch.randn(n, 8, H // 8, W // 8, generator=g),
        "p4": torch.randn(n, 8, H // 16, W // 16, generator=g),
    }


def _rotated_targets(nums, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in nums:
        ctr = torch.rand(n, 2, generator=g) * torch.tensor([W - 30.0, H - 30.0]) + 15
        wh = torch.rand(n, 2, generator=g) * 20 + 10
        ang = torch.rand(n, 1, generator=g) * 180 - 90
        out.append(
            Instances(
                (H, W),
                gt_boxes=RotatedBoxes(torch.cat([ctr, wh, ang], dim=1)),
                gt_classes=torch.randint(0, NUM_CLASSES, (n,), generator=g),
            )
        )
    return out


def test_rrpn_config_and_anchor_count():
    model = _rrpn()
    assert isinstance(model, RRPN)
    assert isinstance(model.box2box_transform, Box2BoxTransformRotated)
    assert model.box2box_transform.weights == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert RRPNConfig().anchor_generator_name == "RotatedAnchorGenerator"
    feats = [_rrpn_features()[f] for f in ("p3", "p4")]
    anchors = model.anchor_generator(feats)
    a = 2 * 3  # aspect ratios x angles, one size per level
    assert [len(x) for x in anchors] == [8 * 12 * a, 4 * 6 * a]
    assert all(isinstance(x, RotatedBoxes) for x in anchors)
    logits, deltas = model.rpn_head(feats)
    assert [tuple(x.shape) for x in logits] == [(2, a, 8, 12), (2, a, 4, 6)]
    assert [tuple(x.shape) for x in deltas] == [(2, a * 5, 8, 12), (2, a * 5, 4, 6)]
    assert set(model.state_dict()) == {
        "rpn_head.conv.weight",
        "rpn_head.conv.bias",
        "rpn_head.objectness_logits.weight",
        "rpn_head.objectness_logits.bias",
        "rpn_head.anchor_deltas.weight",
        "rpn_head.anchor_deltas.bias",
    }


def test_rrpn_label_assignment_uses_rotated_iou():
    model = _rrpn()
    gt = Instances((H, W), gt_boxes=RotatedBoxes(torch.tensor([[10.0, 10.0, 10.0, 10.0, 0.0]])))
    anchors = RotatedBoxes(
        torch.tensor(
            [
                [10.0, 10.0, 10.0, 10.0, 0.0],  # IoU 1: positive
                [10.0, 10.0, 10.0, 10.0, 90.0],  # same square: positive
                [10.0, 10.0, 20.0, 5.0, 0.0],  # IoU 50 / 150: between 0.3 and 0.7, ignored
                [50.0, 50.0, 10.0, 10.0, 0.0],  # IoU 0: negative
                [12.0, 10.0, 10.0, 10.0, 0.0],  # IoU 80 / 120: ignored
                [10.0, 10.0, 10.0, 10.0, 45.0],  # octagon: IoU 0.7071 >= 0.7, positive
                [10.0, 10.0, 40.0, 4.0, 45.0],  # thin diagonal: rotated IoU ~0.22 (< 0.3), negative
            ]
        )
    )
    iou = pairwise_iou_rotated(gt.gt_boxes, anchors)[0]
    for j, b in enumerate(anchors.tensor.tolist()):
        assert float(iou[j]) == pytest.approx(_iou_rotated_ref([10, 10, 10, 10, 0], b), abs=1e-5)
    labels, matched = model.label_and_sample_anchors([anchors], [gt])
    assert labels[0].tolist() == [1, 1, -1, 0, -1, 1, 0]
    torch.testing.assert_close(matched[0], gt.gt_boxes.tensor.expand(7, 5))

    empty = Instances((H, W), gt_boxes=RotatedBoxes(torch.zeros(0, 5)))
    labels, matched = model.label_and_sample_anchors([anchors], [empty])
    assert labels[0].tolist() == [0] * 7 and not matched[0].any()


def test_rrpn_inference_proposals():
    model = _rrpn().eval()
    images = ImageList(torch.zeros(2, 3, H, W), [(H, W), (H - 8, W - 16)])
    feats = _rrpn_features()
    with torch.no_grad():
        proposals, losses = model(images, feats)
    assert losses == {}
    assert len(proposals) == 2
    for p, size in zip(proposals, images.image_sizes):
        assert isinstance(p.proposal_boxes, RotatedBoxes)
        assert p.image_size == size
        assert 0 < len(p) <= 15 and p.proposal_boxes.tensor.shape == (len(p), 5)
        assert (p.objectness_logits[:-1] >= p.objectness_logits[1:]).all()
        assert (p.proposal_boxes.tensor[:, 2:4] > 0).all()
        a = p.proposal_boxes.tensor[:, 4]
        assert ((a >= -180) & (a < 180)).all()
    # the same as decoding every anchor and running find_top_rrpn_proposals (detectron2's path)
    with torch.no_grad():
        fl = [feats[f] for f in model.in_features]
        anchors = model.anchor_generator(fl)
        logits, deltas = model.rpn_head(fl)
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [
            x.view(2, -1, 5, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas
        ]
        expected = find_top_rrpn_proposals(
            model._decode_proposals(anchors, deltas), logits, images.image_sizes, 0.7, 40, 15, 0.0, False
        )
    for p, e in zip(proposals, expected):
        torch.testing.assert_close(p.proposal_boxes.tensor, e.proposal_boxes.tensor)
        torch.testing.assert_close(p.objectness_logits, e.objectness_logits)


def test_find_top_rrpn_proposals_nms_within_levels_only():
    # two identical boxes on one level: one survives; the same box on another level survives too
    box = torch.tensor([30.0, 30.0, 20.0, 10.0, 30.0])
    far = torch.tensor([70.0, 40.0, 10.0, 8.0, -45.0])
    level0 = torch.stack([box, box, far])[None]
    level1 = torch.stack([box])[None]
    res = find_top_rrpn_proposals(
        [level0, level1],
        [torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[2.5]])],
        [(H, W)],
        0.5,
        10,
        10,
        0.0,
        False,
    )[0]
    torch.testing.assert_close(res.objectness_logits, torch.tensor([3.0, 2.5, 1.0]))
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.stack([box, box, far]))
    # a box at most min_box_size high (far: 8 <= 9) is dropped
    res = find_top_rrpn_proposals(
        [level0], [torch.tensor([[3.0, 2.0, 1.0]])], [(H, W)], 0.5, 10, 10, 9.0, False
    )[0]
    torch.testing.assert_close(res.objectness_logits, torch.tensor([3.0]))


@pytest.mark.parametrize("nums", [[3, 2], [1, 0], [0, 0]])
def test_rrpn_training_losses_and_gradients(nums):
    model = _rrpn().train()
    images = ImageList(torch.zeros(2, 3, H, W), [(H, W), (H, W)])
    torch.manual_seed(0)
    proposals, losses = model(images, _rrpn_features(), _rotated_targets(nums))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    assert losses["loss_rpn_cls"] > 0
    if sum(nums) == 0:
        assert losses["loss_rpn_loc"].item() == 0.0
    else:
        assert losses["loss_rpn_loc"] > 0
    assert all(len(p) <= 20 and isinstance(p.proposal_boxes, RotatedBoxes) for p in proposals)
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if sum(nums) > 0 or "anchor_deltas" not in name:
            assert p.grad.abs().sum() > 0, name


def test_rrpn_rejects_axis_aligned_gt_and_boundary_thresh():
    model = _rrpn().train()
    images = ImageList(torch.zeros(1, 3, H, W), [(H, W)])
    from detcore.structures import Boxes

    gt = [Instances((H, W), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])))]
    with pytest.raises(ValueError, match="RotatedBoxes"):
        model(images, _rrpn_features(1), gt)
    with pytest.raises(ValueError, match="anchor_boundary_thresh"):
        build_proposal_generator(_rrpn_cfg(boundary_thresh=0), _RRPN_SHAPES, name="RRPN")


# ---------------------------------------------------------------- RROIHeads
_ROI_SHAPES = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _rroi(**pred_kw) -> RROIHeads:
    torch.manual_seed(0)
    cfg = RROIHeadsConfig(
        num_classes=NUM_CLASSES,
        in_features=("p2", "p3"),
        batch_size_per_image=32,
        box_pooler_resolution=4,
        box_head=FastRCNNConvFCHeadConfig(num_fc=2, fc_dim=16),
    )
    if pred_kw:
        import dataclasses

        cfg = dataclasses.replace(cfg, box_predictor=dataclasses.replace(cfg.box_predictor, **pred_kw))
    return build_component("roi_heads", "RROIHeads", cfg, _ROI_SHAPES)


def _roi_features(n=2):
    g = torch.Generator().manual_seed(1)
    return {
        "p2": torch.randn(n, 8, H // 4, W // 4, generator=g),
        "p3": torch.randn(n, 8, H // 8, W // 8, generator=g),
    }


def _rotated_proposals(n_img=2, n=30, seed=2):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_img):
        ctr = torch.rand(n, 2, generator=g) * torch.tensor([W - 20.0, H - 20.0]) + 10
        wh = torch.rand(n, 2, generator=g) * 25 + 6
        ang = torch.rand(n, 1, generator=g) * 180 - 90
        out.append(
            Instances(
                (H, W),
                proposal_boxes=RotatedBoxes(torch.cat([ctr, wh, ang], dim=1)),
                objectness_logits=torch.randn(n, generator=g),
            )
        )
    return out


def test_rroi_heads_structure():
    model = _rroi()
    assert isinstance(model.box_predictor, RotatedFastRCNNOutputLayers)
    assert model.box_predictor.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0, 1.0)
    assert model.box_pooler.pooler_type == "ROIAlignRotated"
    assert model.box_predictor.bbox_pred.out_features == NUM_CLASSES * 5
    assert {k.split(".")[0] for k in model.state_dict()} == {"box_head", "box_predictor"}
    with pytest.raises(ValueError, match="mask_on"):
        build_component("roi_heads", "RROIHeads", RROIHeadsConfig(mask_on=True), _ROI_SHAPES)


@pytest.mark.parametrize("nums", [[3, 2], [1, 0], [0, 0]])
def test_rroi_heads_training(nums):
    model = _rroi().train()
    torch.manual_seed(0)
    targets = _rotated_targets(nums)
    proposals, losses = model(None, _roi_features(), _rotated_proposals(), targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    for p, t in zip(proposals, targets):
        assert len(p) <= 32
        fg = p.gt_classes < NUM_CLASSES
        assert bool(fg.any()) == (len(t) > 0)  # appended gt boxes match themselves
        if len(t):
            iou = pairwise_iou_rotated(p.gt_boxes, p.proposal_boxes).diagonal()
            assert (iou[fg] >= 0.5 - 1e-5).all() and (iou[~fg] < 0.5 + 1e-5).all()
    if sum(nums) == 0:
        assert losses["loss_box_reg"].item() == 0.0
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if sum(nums) > 0:
            assert p.grad.abs().sum() > 0, name


def test_rroi_heads_inference_runs():
    model = _rroi().eval()
    with torch.no_grad():
        out, losses = model(None, _roi_features(), _rotated_proposals())
    assert losses == {} and len(out) == 2
    for inst in out:
        assert isinstance(inst.pred_boxes, RotatedBoxes)
        assert inst.pred_boxes.tensor.shape == (len(inst), 5)
        assert (inst.scores > 0.05).all() and (inst.pred_classes < NUM_CLASSES).all()


def test_rroi_heads_inference_rotated_nms_hand_case():
    """Zero deltas and a class-0 bias: detections are the proposals, suppressed by rotated (not axis-aligned)
    IoU."""
    model = _rroi(test_score_thresh=0.05, test_nms_thresh=0.5).eval()
    with torch.no_grad():
        for layer in (model.box_predictor.cls_score, model.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        model.box_predictor.cls_score.bias[0] = 6.0
    a = [40.0, 30.0, 20.0, 10.0, 0.0]
    a90 = [40.0, 30.0, 10.0, 20.0, 90.0]  # the same rectangle as a: suppressed by one of them
    c = [40.0, 30.0, 20.0, 10.0, 90.0]  # IoU(a) = 1/3: kept
    far = [80.0, 50.0, 8.0, 8.0, 30.0]
    props = [Instances((H, W), proposal_boxes=RotatedBoxes(torch.tensor([a, a90, c, far])))]
    with torch.no_grad():
        out, _ = model(None, _roi_features(1), props)
    inst = out[0]
    assert len(inst) == 3 and (inst.pred_classes == 0).all()
    got = {tuple(round(v, 3) for v in b) for b in inst.pred_boxes.tensor.tolist()}
    assert tuple(c) in got and tuple(far) in got
    assert (tuple(a) in got) != (tuple(a90) in got)
