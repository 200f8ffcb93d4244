from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from detcore.heads import (
    Box2BoxTransform,
    DefaultAnchorGenerator,
    DefaultAnchorGeneratorConfig,
    EMALossNormalizer,
    RetinaNetHead,
    RetinaNetHeadConfig,
    RetinaNetLogic,
    build_anchor_generator,
    build_component,
    permute_to_N_HWA_K,
)
from detcore.heads.dense import (
    CycleBatchNormList,
    retinanet_anchor_generator_config,
    retinanet_label_anchors,
    transpose_dense_predictions,
)
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, Instances

LEVELS = ["p3", "p4", "p5", "p6", "p7"]


def _shapes(channels: int, strides=(8, 16, 32, 64, 128)) -> list[ShapeSpec]:
    return [ShapeSpec(channels=channels, stride=s) for s in strides]


def test_retinanet_anchor_generator_config():
    assert retinanet_anchor_generator_config() == _retinanet_anchor_cfg()


def _retinanet_anchor_cfg() -> DefaultAnchorGeneratorConfig:
    # detectron2's Base-RetinaNet.yaml: 3 scales per octave, 3 aspect ratios
    return DefaultAnchorGeneratorConfig(
        sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    )


def _reference_keys(reference_dir, filename: str, prefix: str) -> dict[str, list[int]]:
    out = {}
    for line in (reference_dir / "detectron2-state-dicts" / filename).read_text().splitlines():
        if line.startswith(prefix):
            name, shape, _ = line.split("\t")
            out[name[len(prefix) :]] = [int(s) for s in shape.strip("[]").split(",")]
    return out


def test_state_dict_matches_detectron2_retinanet(reference_dir):
    shapes = _shapes(256)
    anchor_generator = build_anchor_generator(_retinanet_anchor_cfg(), shapes)
    assert anchor_generator.num_anchors == [9] * 5
    head = build_component(
        "dense_head", "RetinaNetHead", None, shapes, num_anchors=anchor_generator.num_anchors
    )
    ours = {k: list(v.shape) for k, v in head.state_dict().items()}
    expected = _reference_keys(reference_dir, "retinanet_R_50_FPN.txt", "head.")
    assert len(expected) == 20
    assert ours == expected


def test_config_defaults_and_init():
    cfg = RetinaNetHeadConfig()
    assert (cfg.num_classes, cfg.num_convs, cfg.prior_prob, cfg.norm) == (80, 4, 0.01, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3  # frozen
    head = RetinaNetHead(input_shape=_shapes(8, (8, 16)), num_classes=3, num_anchors=2, conv_dims=[8, 6])
    assert torch.allclose(head.cls_score.bias, torch.full((6,), -math.log(99.0)))
    assert torch.count_nonzero(head.bbox_pred.bias) == 0
    assert head.cls_score.in_channels == 6 and head.bbox_subnet[2].in_channels == 8
    assert 0.005 < float(head.cls_subnet[0].weight.detach().std()) < 0.015


def test_forward_shapes_per_level():
    torch.manual_seed(0)
    head = RetinaNetHead(input_shape=_shapes(8, (8, 16, 32)), num_classes=5, num_anchors=3, conv_dims=[8, 8])
    feats = [torch.randn(2, 8, 12, 10), torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)]
    logits, deltas = head(feats)
    assert [list(x.shape) for x in logits] == [[2, 15, 12, 10], [2, 15, 6, 5], [2, 15, 3, 3]]
    assert [list(x.shape) for x in deltas] == [[2, 12, 12, 10], [2, 12, 6, 5], [2, 12, 3, 3]]
    with pytest.raises(ValueError, match="features"):
        head(feats[:2])
    with pytest.raises(TypeError, match="features"):
        head(feats[0])


def test_norm_variants_state_dict_names():
    gn = RetinaNetHead(
        input_shape=_shapes(32, (8, 16)), num_classes=2, num_anchors=1, conv_dims=[32, 32], norm="GN"
    )
    assert isinstance(gn.cls_subnet[1], torch.nn.GroupNorm)
    names = sorted({k.rsplit(".", 1)[0] for k in gn.state_dict() if k.startswith("cls_subnet.")})
    assert names == ["cls_subnet.0", "cls_subnet.1", "cls_subnet.3", "cls_subnet.4"]

    bn = RetinaNetHead(
        input_shape=_shapes(4, (8, 16)), num_classes=2, num_anchors=1, conv_dims=[4], norm="BN"
    )
    assert isinstance(bn.cls_subnet[1], CycleBatchNormList)
    keys = set(bn.state_dict())
    assert {
        "cls_subnet.1.weight",
        "cls_subnet.1.bias",
        "cls_subnet.1.0.running_mean",
        "cls_subnet.1.1.running_mean",
    } <= keys
    # one set of statistics per level: the first conv is made the identity; level 0 sees +5, level 1 sees -5
    bn.train()
    with torch.no_grad():
        w = bn.cls_subnet[0].weight
        w.zero_()
        w[:, :, 1, 1] = torch.eye(4)
        bn.cls_subnet[0].bias.zero_()
    bn([torch.full((1, 4, 4, 4), 5.0), torch.full((1, 4, 2, 2), -5.0)])
    assert torch.allclose(bn.cls_subnet[1][0].running_mean, torch.full((4,), 0.5))
    assert torch.allclose(bn.cls_subnet[1][1].running_mean, torch.full((4,), -0.5))
    bn([torch.full((1, 4, 4, 4), 1.0), torch.full((1, 4, 2, 2), -5.0)])
    assert torch.allclose(bn.cls_subnet[1][0].running_mean, torch.full((4,), 0.55))
    assert torch.allclose(bn.cls_subnet[1][1].running_mean, torch.full((4,), -0.95))
    # shared affine parameters are applied after the per-level normalisation
    bn.eval()
    with torch.no_grad():
        bn.cls_subnet[1].weight.fill_(2.0)
        bn.cls_subnet[1].bias.fill_(0.25)
    m = bn.cls_subnet[1]
    x = torch.randn(1, 4, 3, 3)
    assert m._pos == 0  # two levels were seen twice each
    expected0 = (x - m[0].running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        m[0].running_var.view(1, -1, 1, 1) + 1e-5
    )
    expected1 = (x - m[1].running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        m[1].running_var.view(1, -1, 1, 1) + 1e-5
    )
    with torch.no_grad():
        assert torch.allclose(m(x), expected0 * 2.0 + 0.25, atol=1e-5)
        assert torch.allclose(m(x), expected1 * 2.0 + 0.25, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        RetinaNetHead(
            input_shape=[ShapeSpec(channels=8, stride=8), ShapeSpec(channels=4, stride=16)],
            num_classes=2,
            num_anchors=1,
            conv_dims=[8],
        )
    with pytest.raises(ValueError, match="num_classes"):
        RetinaNetHead(input_shape=_shapes(8, (8,)), num_classes=0, num_anchors=1, conv_dims=[8])
    with pytest.raises(ValueError, match="prior_prob"):
        RetinaNetHead(
            input_shape=_shapes(8, (8,)), num_classes=2, num_anchors=1, conv_dims=[8], prior_prob=1.0
        )
    with pytest.raises(ValueError, match="num_anchors"):
        RetinaNetHead.from_config(None, _shapes(8, (8, 16)), num_anchors=[3, 6])


def test_permute_to_N_HWA_K_matches_loop():
    t = torch.randn(2, 3 * 4, 2, 5)
    out = permute_to_N_HWA_K(t, 4)
    assert out.shape == (2, 2 * 5 * 3, 4)
    for n in range(2):
        for h in range(2):
            for w in range(5):
                for a in range(3):
                    for k in range(4):
                        assert out[n, (h * 5 + w) * 3 + a, k] == t[n, a * 4 + k, h, w]
    with pytest.raises(ValueError, match="K"):
        permute_to_N_HWA_K(t, 5)
    with pytest.raises(ValueError, match="tensor"):
        permute_to_N_HWA_K(t[0], 4)


def _inst(boxes, classes, size=(100, 100)) -> Instances:
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def test_label_anchors_hand_cases():
    # anchors on two "levels"; IoU with gt [0, 0, 10, 10]:
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]])),  # IoU 1.0, 0.5 -> fg, fg
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 22.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 30.0]])),
        # IoU 10/22=0.4545 -> ignore, 0 -> bg, 1/3 -> bg
    ]
    logic = RetinaNetLogic(num_classes=7)
    labels, boxes = logic.label_anchors(anchors, [_inst([[0, 0, 10, 10]], [3])])
    assert labels[0].tolist() == [3, 3, -1, 7, 7]
    assert torch.equal(boxes[0][0], torch.tensor([0.0, 0.0, 10.0, 10.0]))

    # low-quality match: the best anchor of gt [40, 40, 70, 70] has IoU 100/900 < 0.4 -> still foreground
    labels, boxes = logic.label_anchors(anchors, [_inst([[0, 0, 10, 10], [40, 40, 70, 70]], [3, 5])])
    assert labels[0].tolist() == [3, 3, -1, 5, 7]
    assert torch.equal(boxes[0][3], torch.tensor([40.0, 40.0, 70.0, 70.0]))

    # no ground truth: all background, several images
    labels, boxes = logic.label_anchors(anchors, [_inst([], []), _inst([[0, 0, 10, 10]], [0])])
    assert labels[0].tolist() == [7] * 5 and labels[0].dtype == torch.int64
    assert torch.count_nonzero(boxes[0]) == 0 and boxes[0].shape == (5, 4)
    assert labels[1].tolist() == [0, 0, -1, 7, 7]

    # the default matcher is detectron2's
    m = logic.anchor_matcher
    assert m.thresholds[1:-1] == [0.4, 0.5] and m.labels == [0, -1, 1] and m.allow_low_quality_matches
    with pytest.raises(ValueError, match="gt_instances"):
        retinanet_label_anchors(anchors, [Instances((10, 10))], m, 7)


def test_ema_normalizer():
    ema = EMALossNormalizer(100.0, 0.9)
    assert ema.update(10) == pytest.approx(91.0)
    assert ema.update(0) == pytest.approx(0.9 * 91.0 + 0.1 * 1.0)  # max(n, 1)
    ema.reset()
    assert ema.value == 100.0
    with pytest.raises(ValueError, match="momentum"):
        EMALossNormalizer(100.0, 1.5)


def _focal_ref(logits: torch.Tensor, targets: torch.Tensor, alpha=0.25, gamma=2.0) -> torch.Tensor:
    x = logits.double()
    t = targets.double()
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return (a_t * ce * (1 - p_t) ** gamma).sum()


def _smooth_l1_ref(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    n = (x.double() - y.double()).abs()
    return torch.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta).sum()


def test_losses_values_and_normalizer():
    torch.manual_seed(0)
    num_classes = 3
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 22.0], [50.0, 50.0, 60.0, 60.0]])),
    ]
    logic = RetinaNetLogic(num_classes=num_classes)
    gt = [_inst([[1, 1, 11, 12]], [2]), _inst([], [])]
    gt_labels, gt_boxes = logic.label_anchors(anchors, gt)
    # gt [1,1,11,12] (area 110): IoU with anchor0 = 90/120 = 0.75 (fg), anchor1 = 100/210 (ignore),
    # anchor2 = 100/230 (ignore), anchor3 = 0 (bg)
    assert gt_labels[0].tolist() == [2, -1, -1, 3]
    assert gt_labels[1].tolist() == [3, 3, 3, 3]
    logits = [torch.randn(2, 2, num_classes), torch.randn(2, 2, num_classes)]
    deltas = [torch.randn(2, 2, 4), torch.randn(2, 2, 4)]
    losses = logic.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    norm = 0.9 * 100 + 0.1 * 1  # one foreground anchor
    assert logic.loss_normalizer.value == pytest.approx(norm)

    all_logits = torch.cat(logits, dim=1)
    valid = torch.stack(gt_labels) >= 0
    target = F.one_hot(torch.stack(gt_labels)[valid], num_classes + 1)[:, :-1]
    expected_cls = _focal_ref(all_logits[valid], target) / norm
    assert losses["loss_cls"].item() == pytest.approx(float(expected_cls), rel=1e-5)

    target_deltas = Box2BoxTransform((1.0, 1.0, 1.0, 1.0)).get_deltas(
        anchors[0].tensor[:1], torch.tensor([[1.0, 1.0, 11.0, 12.0]])
    )
    expected_box = _smooth_l1_ref(torch.cat(deltas, dim=1)[0, :1], target_deltas, 0.1) / norm
    assert losses["loss_box_reg"].item() == pytest.approx(float(expected_box), rel=1e-5)

    # second call: EMA continues
    logic.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    assert logic.loss_normalizer.value == pytest.approx(0.9 * norm + 0.1)

    # giou variant: 1 - GIoU of the decoded box
    logic_g = RetinaNetLogic(num_classes=num_classes, box_reg_loss_type="giou")
    zero = [torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)]
    lg = logic_g.losses(anchors, logits, gt_labels, zero, gt_boxes)
    # decoded box = anchor0 [0,0,10,10]; gt [1,1,11,12]: iou = 81/129, enclosing 11*12=132
    iou = 81.0 / 129.0
    giou = iou - (132.0 - 129.0) / 132.0
    assert lg["loss_box_reg"].item() == pytest.approx((1 - giou) / norm, rel=1e-5)
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        RetinaNetLogic(num_classes=3, box_reg_loss_type="l2")


def _one_level_setup():
    gen = DefaultAnchorGenerator(sizes=[[16.0]], aspect_ratios=[[0.5, 1.0]], strides=[8], offset=0.0)
    feats = [torch.zeros(1, 1, 4, 5)]
    anchors = gen(feats)
    return gen, feats, anchors


def test_inference_one_strong_logit_decodes_to_its_anchor():
    num_classes = 4
    _, _, anchors = _one_level_setup()
    a_count, h, w = 2, 4, 5
    logits = torch.full((1, a_count * num_classes, h, w), -10.0)
    deltas = torch.zeros((1, a_count * 4, h, w))
    # anchor a=1 at (row 2, col 3), class 2
    logits[0, 1 * num_classes + 2, 2, 3] = 3.0
    logic = RetinaNetLogic(num_classes=num_classes)
    (res,) = logic.forward_inference(anchors, [[logits], [deltas]], [(32, 40)])
    assert len(res) == 1
    idx = (2 * w + 3) * a_count + 1
    assert torch.allclose(res.pred_boxes.tensor[0], anchors[0].tensor[idx])
    assert torch.allclose(res.pred_boxes.tensor[0], torch.tensor([24.0 - 8, 16.0 - 8, 24.0 + 8, 16.0 + 8]))
    assert float(res.scores[0]) == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert res.pred_classes.tolist() == [2]
    assert res.image_size == (32, 40)

    # a delta moves the box: dx = 0.5 -> +8 pixels in x, dw = log 2 -> twice as wide
    deltas[0, 1 * 4 + 0, 2, 3] = 0.5
    deltas[0, 1 * 4 + 2, 2, 3] = math.log(2.0)
    (res,) = logic.forward_inference(anchors, [[logits], [deltas]], [(32, 40)])
    assert torch.allclose(
        res.pred_boxes.tensor[0], torch.tensor([32.0 - 16, 8.0, 32.0 + 16, 24.0]), atol=1e-5
    )


def test_inference_threshold_nms_topk_and_max_dets():
    num_classes = 2
    _, _, anchors = _one_level_setup()
    logits = torch.full((1, 2 * num_classes, 4, 5), -10.0)
    deltas = torch.zeros((1, 8, 4, 5))
    # two overlapping anchors (cols 1 and 2 of row 0, a=1; IoU 8/24 = 1/3 < 0.5 -> both kept) and one same-place
    # anchor of another class; and a score below 0.05
    logits[0, 1 * 2 + 0, 0, 1] = 2.0
    logits[0, 1 * 2 + 0, 0, 2] = 1.0
    logits[0, 1 * 2 + 1, 0, 1] = 0.5
    logits[0, 0 * 2 + 0, 0, 1] = 1.5  # a=0 at the same position, IoU with a=1 box: (0.5 ratio) -> check
    logits[0, 0 * 2 + 0, 3, 4] = -3.5  # sigmoid = 0.029 < 0.05
    logic = RetinaNetLogic(num_classes=num_classes)
    (res,) = logic.forward_inference(anchors, [[logits], [deltas]], [(32, 40)])
    scores = torch.sigmoid(torch.tensor([2.0, 1.5, 1.0, 0.5]))
    # a=0 (ratio 0.5: 22.6 x 11.3) and a=1 (16 x 16) centred at the same point: IoU = 16*11.3/(256+256-181) = 0.547
    # -> a=0 box (score 1.5) suppressed by a=1 (score 2.0) in class 0
    assert res.scores.tolist() == pytest.approx([scores[0].item(), scores[2].item(), scores[3].item()])
    assert res.pred_classes.tolist() == [0, 0, 1]

    logic_k = RetinaNetLogic(num_classes=num_classes, test_topk_candidates=2)
    (res,) = logic_k.forward_inference(anchors, [[logits], [deltas]], [(32, 40)])
    assert res.scores.tolist() == pytest.approx([scores[0].item()])  # top-2 before NMS, then one suppressed
    logic_m = RetinaNetLogic(num_classes=num_classes, max_detections_per_image=1)
    (res,) = logic_m.forward_inference(anchors, [[logits], [deltas]], [(32, 40)])
    assert len(res) == 1

    # nothing above threshold -> empty result
    (res,) = logic.forward_inference(anchors, [[torch.full_like(logits, -10.0)], [deltas]], [(32, 40)])
    assert len(res) == 0 and res.pred_boxes.tensor.shape == (0, 4)


def test_transpose_dense_predictions():
    a, b = torch.randn(1, 6, 2, 2), torch.randn(1, 8, 2, 2)
    out = transpose_dense_predictions([[a], [b]], [3, 4])
    assert out[0][0].shape == (1, 8, 3) and out[1][0].shape == (1, 8, 4)
    with pytest.raises(ValueError, match="dims_per_anchor"):
        transpose_dense_predictions([[a], [b]], [3])


@pytest.mark.parametrize("num_gt", [3, 1, 0])
def test_training_gradients(num_gt):
    torch.manual_seed(num_gt)
    num_classes = 3
    shapes = _shapes(32, (8, 16))
    gen = DefaultAnchorGenerator(
        sizes=[[16.0, 24.0], [32.0, 48.0]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16]
    )
    head = RetinaNetHead(
        input_shape=shapes, num_classes=num_classes, num_anchors=6, conv_dims=[32, 32], norm="GN"
    )
    feats = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    anchors = gen(feats)
    boxes = [[4, 6, 30, 40], [20, 20, 60, 50], [40, 2, 63, 20]][:num_gt]
    gt = [_inst(boxes, [0, 2, 1][:num_gt], (64, 64)), _inst(boxes[:1], [1][: min(num_gt, 1)], (64, 64))]
    logic = RetinaNetLogic(num_classes=num_classes)
    losses = logic.forward_training(anchors, head(feats), gt)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    if num_gt > 0:
        assert losses["loss_box_reg"].item() > 0
        assert torch.count_nonzero(head.bbox_pred.weight.grad) > 0
    else:
        assert losses["loss_box_reg"].item() == 0.0
    assert torch.count_nonzero(head.cls_score.weight.grad) > 0
