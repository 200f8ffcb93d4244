"""FastRCNNOutputLayers and fast_rcnn_inference against float64 pure-PyTorch references (detectron2's
semantics: clip, score > thresh over (R, K) candidates, greedy per-class NMS, top-k) and hand-computed losses."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from detcore.heads import Box2BoxTransform
from detcore.heads.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, fast_rcnn_inference
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, Instances


def _ref_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(inter > 0, inter / union, torch.zeros_like(inter))


def _ref_inference(boxes, scores, image_shape, score_thresh, nms_thresh, topk):
    """detectron2's fast_rcnn_inference_single_image in float64, with a greedy per-class NMS loop."""
    boxes, scores = boxes.double(), scores.double()
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    k = boxes.shape[1] // 4
    h, w = image_shape
    b = boxes.reshape(-1, k, 4).clone()
    b[..., 0::2] = b[..., 0::2].clamp(0, w)
    b[..., 1::2] = b[..., 1::2].clamp(0, h)
    cands = []
    for r in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            if scores[r, c] > score_thresh:
                cands.append((float(scores[r, c]), r, c, b[r, c if k > 1 else 0]))
    kept = []
    for c in sorted({x[2] for x in cands}):
        cls = sorted([x for x in cands if x[2] == c], key=lambda x: -x[0])
        alive = [True] * len(cls)
        for i in range(len(cls)):
            if not alive[i]:
                continue
            kept.append(cls[i])
            for j in range(i + 1, len(cls)):
                if alive[j] and _ref_iou(cls[i][3][None], cls[j][3][None])[0, 0] > nms_thresh:
                    alive[j] = False
    kept.sort(key=lambda x: -x[0])
    if topk >= 0:
        kept = kept[:topk]
    if not kept:
        return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), [], []
    return (
        torch.stack([x[3] for x in kept]),
        torch.tensor([x[0] for x in kept], dtype=torch.float64),
        [x[2] for x in kept],
        [x[1] for x in kept],
    )


def _random_case(seed, r=60, k=5, agnostic=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(r, 1, 2, generator=g) * 80 - 10
    nb = 1 if agnostic else k
    wh = torch.rand(r, nb, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy.expand(r, nb, 2) + torch.rand(r, nb, 2, generator=g) * 4, xy + wh], dim=2).reshape(
        r, -1
    )
    scores = torch.softmax(torch.randn(r, k + 1, generator=g) * 2, dim=1)
    return boxes, scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_rcnn_inference_matches_reference(seed, agnostic, dtype):
    boxes, scores = _random_case(seed, agnostic=agnostic)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    topk = 100 if seed % 2 == 0 else 7
    (inst,), (kept,) = fast_rcnn_inference([boxes], [scores], [(64, 72)], 0.05, 0.5, topk)
    rb, rs, rc, rk = _ref_inference(boxes, scores, (64, 72), 0.05, 0.5, topk)
    assert inst.image_size == (64, 72)
    assert inst.pred_classes.tolist() == rc
    assert kept.tolist() == rk
    torch.testing.assert_close(inst.scores.double(), rs)
    torch.testing.assert_close(inst.pred_boxes.tensor.double(), rb)
    assert inst.pred_boxes.tensor.dtype == dtype


def test_fast_rcnn_inference_drops_non_finite_rows_and_handles_empty():
    boxes, scores = _random_case(5)
    boxes[3, 2] = float("nan")
    scores[7, 0] = float("inf")
    (inst,), (kept,) = fast_rcnn_inference([boxes], [scores], [(64, 72)], 0.05, 0.5, 100)
    rb, rs, rc, rk = _ref_inference(boxes, scores, (64, 72), 0.05, 0.5, 100)
    assert kept.tolist() == rk and inst.pred_classes.tolist() == rc
    torch.testing.assert_close(inst.pred_boxes.tensor.double(), rb)
    torch.testing.assert_close(inst.scores.double(), rs)
    # huge but finite values: the fast finite check overflows, the exact one keeps the row
    boxes2, scores2 = _random_case(6, r=3)
    boxes2[0, 0] = 3e38
    boxes2[0, 1] = 3e38
    (inst2,), _ = fast_rcnn_inference([boxes2], [scores2], [(64, 72)], 0.05, 0.5, 100)
    _, rs2, _, _ = _ref_inference(boxes2, scores2, (64, 72), 0.05, 0.5, 100)
    assert len(inst2) == len(rs2)
    # nothing above the threshold, and no proposals
    (inst3,), (kept3,) = fast_rcnn_inference([boxes], [scores], [(64, 72)], 1.0, 0.5, 100)
    assert len(inst3) == 0 and kept3.numel() == 0
    (inst4,), _ = fast_rcnn_inference([torch.zeros(0, 20)], [torch.zeros(0, 6)], [(64, 72)], 0.05, 0.5, 100)
    assert len(inst4) == 0 and inst4.pred_boxes.tensor.shape == (0, 4)


def test_fast_rcnn_inference_bad_input():
    boxes, scores = _random_case(0)
    with pytest.raises(ValueError, match="one entry per image"):
        fast_rcnn_inference([boxes], [scores, scores], [(64, 72)], 0.05, 0.5, 100)
    with pytest.raises(TypeError, match="boxes"):
        fast_rcnn_inference(boxes, [scores], [(64, 72)], 0.05, 0.5, 100)
    with pytest.raises(ValueError, match="boxes"):
        fast_rcnn_inference([boxes[:, :7]], [scores], [(64, 72)], 0.05, 0.5, 100)
    with pytest.raises(ValueError, match="scores"):
        fast_rcnn_inference([boxes], [scores[:5]], [(64, 72)], 0.05, 0.5, 100)
    with pytest.raises(ValueError, match="classes"):
        fast_rcnn_inference([boxes[:, :8]], [scores], [(64, 72)], 0.05, 0.5, 100)
    with pytest.raises(ValueError, match="image_shape"):
        fast_rcnn_inference([boxes], [scores], [(64,)], 0.05, 0.5, 100)


def _predictor(**kw):
    torch.manual_seed(0)
    return FastRCNNOutputLayers(
        ShapeSpec(channels=6),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=3,
        **kw,
    )


def _proposals_with_gt():
    p1 = Instances((50, 60))
    p1.proposal_boxes = Boxes(
        torch.tensor([[1.0, 2.0, 20.0, 25.0], [5.0, 5.0, 15.0, 30.0], [0.0, 0.0, 9.0, 9.0]])
    )
    p1.gt_boxes = Boxes(torch.tensor([[2.0, 2.0, 22.0, 24.0], [4.0, 6.0, 16.0, 28.0], [0.0, 0.0, 1.0, 1.0]]))
    p1.gt_classes = torch.tensor([2, 0, 3])  # the last is background
    p2 = Instances((50, 60))  # an image without gt: only gt_classes (background)
    p2.proposal_boxes = Boxes(torch.tensor([[3.0, 3.0, 13.0, 13.0]]))
    p2.gt_classes = torch.tensor([3])
    return [p1, p2]


def test_losses_match_hand_computation():
    pred = _predictor(smooth_l1_beta=0.0, loss_weight={"loss_box_reg": 2.0})
    proposals = _proposals_with_gt()
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    deltas = torch.randn(4, 12, generator=g, dtype=torch.float64, requires_grad=True)
    losses = pred.losses((scores, deltas), proposals)
    gt_classes = torch.tensor([2, 0, 3, 3])
    torch.testing.assert_close(losses["loss_cls"], F.cross_entropy(scores, gt_classes))
    # box loss: L1 on class-specific deltas of the 2 foreground regions, divided by all 4 regions, times 2
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    prop = proposals[0].proposal_boxes.tensor.double()[:2]
    gt = proposals[0].gt_boxes.tensor.double()[:2]
    target = t.get_deltas(prop, gt)
    pred_d = torch.stack([deltas[0, 8:12], deltas[1, 0:4]])
    expected = (pred_d - target).abs().sum() / 4 * 2.0
    torch.testing.assert_close(losses["loss_box_reg"], expected)
    sum(losses.values()).backward()
    assert deltas.grad[2:].abs().sum() == 0 and deltas.grad[0, 8:].abs().sum() > 0


def test_losses_class_agnostic_and_giou_and_empty():
    pred = _predictor(cls_agnostic_bbox_reg=True, box_reg_loss_type="giou")
    assert pred.bbox_pred.out_features == 4
    proposals = _proposals_with_gt()
    x = torch.randn(4, 6)
    losses = pred.losses(pred(x), proposals)
    assert all(torch.isfinite(v) for v in losses.values())
    # no regions at all
    empty = Instances(
        (50, 60), proposal_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    losses = pred.losses(pred(torch.randn(0, 6)), [empty])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0


def test_sigmoid_ce_matches_reference_and_fed_loss_restricts_classes():
    pred = _predictor(use_sigmoid_ce=True)
    scores = torch.randn(4, 4, dtype=torch.float64)
    gt = torch.tensor([2, 0, 3, 3])
    target = F.one_hot(gt, 4)[:, :3].double()
    expected = F.binary_cross_entropy_with_logits(scores[:, :3], target, reduction="sum") / 4
    torch.testing.assert_close(pred.sigmoid_cross_entropy_loss(scores, gt), expected)
    # fed loss with zero weight on class 1: only the gt classes {0, 2} (+ none sampled) count
    fed = _predictor(
        use_sigmoid_ce=True,
        use_fed_loss=True,
        get_fed_loss_cls_weights=torch.tensor([1.0, 0.0, 1.0]),
        fed_loss_num_classes=2,
    )
    per = F.binary_cross_entropy_with_logits(scores[:, :3], target, reduction="none")
    expected_fed = (per[:, 0].sum() + per[:, 2].sum()) / 4
    torch.testing.assert_close(fed.sigmoid_cross_entropy_loss(scores, gt), expected_fed)
    classes = FastRCNNOutputLayers.get_fed_loss_classes(
        torch.tensor([1]), 3, 3, torch.tensor([1.0, 0.0, 1.0])
    )
    assert sorted(classes.tolist()) == [0, 1, 2]
    probs = fed.predict_probs(
        (scores, torch.zeros(4, 12)), [Instances((1, 1), proposal_boxes=Boxes(torch.zeros(4, 4)))]
    )
    torch.testing.assert_close(probs[0], scores.sigmoid())


def test_predict_boxes_probs_and_inference():
    pred = _predictor(test_score_thresh=0.0, test_topk_per_image=5)
    proposals = [
        Instances(
            (50, 60), proposal_boxes=Boxes(torch.rand(7, 2).repeat(1, 2) * 20 + torch.tensor([0, 0, 10, 10]))
        )
    ]
    scores, deltas = torch.randn(7, 4), torch.randn(7, 12) * 0.1
    boxes = pred.predict_boxes((scores, deltas), proposals)[0]
    ref = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)).apply_deltas(
        deltas, proposals[0].proposal_boxes.tensor
    )
    torch.testing.assert_close(boxes, ref)
    torch.testing.assert_close(pred.predict_probs((scores, deltas), proposals)[0], torch.softmax(scores, -1))
    (inst,), (kept,) = pred.inference((scores, deltas), proposals)
    assert len(inst) == len(kept) <= 5 and (inst.scores[:-1] >= inst.scores[1:]).all()
    proposals[0].gt_classes = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    per_gt = pred.predict_boxes_for_gt_classes((scores, deltas), proposals)[0]
    idx = proposals[0].gt_classes.clamp(max=2)
    torch.testing.assert_close(per_gt, ref.view(7, 3, 4)[torch.arange(7), idx])


def test_predictor_state_dict_names_init_and_errors():
    pred = _predictor()
    assert set(pred.state_dict()) == {
        "cls_score.weight",
        "cls_score.bias",
        "bbox_pred.weight",
        "bbox_pred.bias",
    }
    assert pred.cls_score.out_features == 4 and pred.bbox_pred.out_features == 12
    assert pred.bbox_pred.bias.abs().sum() == 0
    assert pred.loss_weight == {"loss_cls": 1.0, "loss_box_reg": 1.0}
    with pytest.raises(ValueError, match="use_sigmoid_ce"):
        _predictor(use_fed_loss=True, get_fed_loss_cls_weights=torch.ones(3))
    with pytest.raises(ValueError, match="get_fed_loss_cls_weights"):
        _predictor(use_fed_loss=True, use_sigmoid_ce=True, get_fed_loss_cls_weights=torch.ones(4))
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        _predictor(box_reg_loss_type="l2")
    with pytest.raises(ValueError, match="loss_weight"):
        _predictor(loss_weight={"loss_foo": 1.0})
    with pytest.raises(ValueError, match="num_classes"):
        FastRCNNOutputLayers(6, box2box_transform=Box2BoxTransform((1, 1, 1, 1)), num_classes=0)
    with pytest.raises(ValueError, match="gt_classes"):
        pred.losses(pred(torch.randn(1, 6)), [Instances((5, 5), proposal_boxes=Boxes(torch.zeros(1, 4)))])


def test_box_head_names_shapes_and_errors():
    head = FastRCNNConvFCHead(
        ShapeSpec(channels=4, height=5, width=5), conv_dims=[32, 32], fc_dims=[10, 8], conv_norm="GN"
    )
    names = set(head.state_dict())
    assert {
        "conv1.weight",
        "conv1.norm.weight",
        "conv2.weight",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
    } <= names
    assert "conv1.bias" not in names  # no bias with a norm
    out = head(torch.randn(3, 4, 5, 5))
    assert out.shape == (3, 8) and head.output_shape == ShapeSpec(channels=8)
    conv_only = FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[6], fc_dims=[])
    assert conv_only(torch.randn(2, 4, 5, 5)).shape == (2, 6, 5, 5)
    assert conv_only.output_shape == ShapeSpec(channels=6, height=5, width=5)
    with pytest.raises(ValueError, match="conv_dims and fc_dims"):
        FastRCNNConvFCHead(ShapeSpec(channels=4, height=5, width=5), conv_dims=[], fc_dims=[])
    with pytest.raises(ValueError, match="x must be"):
        head(torch.randn(3, 100))


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("case", ["plain", "nan_delta", "huge_delta", "inf_logit", "two_images"])
def test_inference_equals_fast_rcnn_inference_on_decoded_boxes(agnostic, case):
    """inference() decodes only the candidates; results must equal the general path (all decoded)."""
    pred = _predictor(cls_agnostic_bbox_reg=agnostic, test_score_thresh=0.05, test_topk_per_image=20)
    g = torch.Generator().manual_seed(7)
    n = 50
    xy = torch.rand(n, 2, generator=g) * 40
    proposals = Instances(
        (50, 60), proposal_boxes=Boxes(torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 20 + 1], 1))
    )
    scores = torch.randn(n, 4, generator=g) * 2
    deltas = torch.randn(n, 4 if agnostic else 12, generator=g)
    if case == "nan_delta":
        deltas[4, 1] = float("nan")
    elif case == "huge_delta":
        deltas[9, 0] = 1e37  # decodes to inf: detectron2 drops the row
    elif case == "inf_logit":
        scores[2, 1] = float("inf")
    props = [proposals]
    if case == "two_images":
        props = [proposals[:20], proposals[20:]]
    got, got_kept = pred.inference((scores, deltas), props)
    boxes = pred.predict_boxes((scores, deltas), props)
    probs = pred.predict_probs((scores, deltas), props)
    exp, exp_kept = fast_rcnn_inference(boxes, probs, [p.image_size for p in props], 0.05, 0.5, 20)
    for a, b, ka, kb in zip(got, exp, got_kept, exp_kept):
        assert a.pred_classes.tolist() == b.pred_classes.tolist() and ka.tolist() == kb.tolist()
        torch.testing.assert_close(a.scores, b.scores, atol=0, rtol=0)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-5, rtol=1e-6)
    if case == "huge_delta":
        assert sum(len(a) for a in got) > 0
    # the candidate-decoding path handles every case itself (non-finite and huge rows are masked out)
    fast = pred._inference_decoding_candidates((scores, deltas), props)
    assert fast is not None


@pytest.mark.parametrize("candidates_only", [False, True])
def test_inference_drops_non_finite_rows_keeps_huge_finite_rows(candidates_only):
    """Row 1 has an inf coordinate (dropped); row 2 is finite but its sum overflows float32 (kept, clipped);
    kept indices count the valid rows only (detectron2)."""
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [float("inf"), 0, 5, 5], [1e38, 1e38, 3e38, 3e38], [20, 20, 30, 30]]
    )
    assert not torch.isfinite(boxes[2].sum())
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    probs = torch.stack((s, 1 - s), dim=1)
    expected_boxes = torch.tensor([[0.0, 0, 10, 10], [60, 50, 60, 50], [20, 20, 30, 30]])
    if candidates_only:
        # the same through FastRCNNOutputLayers.inference: zero deltas decode to the proposals themselves
        pred = FastRCNNOutputLayers(
            ShapeSpec(channels=6),
            box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
            num_classes=1,
            cls_agnostic_bbox_reg=True,
            test_score_thresh=0.05,
            test_topk_per_image=20,
        )
        proposals = [Instances((50, 60), proposal_boxes=Boxes._wrap(boxes))]  # _wrap: no finiteness check
        (inst,), (kept,) = pred.inference((probs.log(), torch.zeros(4, 4)), proposals)
        expected_kept = [0, 1, 2]
        torch.testing.assert_close(inst.scores, s[[0, 2, 3]], atol=1e-6, rtol=0)
    else:
        (inst,), (kept,) = fast_rcnn_inference([boxes], [probs], [(50, 60)], 0.05, 0.5, 20)
        expected_kept = [0, 1, 2]
        torch.testing.assert_close(inst.scores, s[[0, 2, 3]], atol=0, rtol=0)
    torch.testing.assert_close(inst.pred_boxes.tensor, expected_boxes, atol=0, rtol=0)
    assert inst.pred_classes.tolist() == [0, 0, 0]
    assert kept.tolist() == expected_kept
