"""Mask and keypoint heads: state-dict names, losses against hand-computed values, inference, errors; and the
plugin registration of the ROI-head components."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from detcore.heads import _plugin
from detcore.heads.build import build_component
from detcore.heads.roi_heads import (
    FastRCNNConvFCHead,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    StandardROIHeads,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detcore.ops import ShapeSpec
from detcore.plugins import ComponentRegistry, get_component
from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, heatmaps_to_keypoints

H, W = 40, 50


def _fg_instances(gt_masks, boxes, classes):
    return Instances(
        (H, W), proposal_boxes=Boxes(boxes), gt_masks=gt_masks, gt_classes=torch.as_tensor(classes)
    )


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_mask_loss_full_and_empty_targets(kind):
    boxes = torch.tensor([[5.0, 5.0, 25.0, 30.0], [30.0, 2.0, 45.0, 12.0]])
    if kind == "polygon":
        full = [np.array([0, 0, W, 0, W, H, 0, H], dtype=np.float64)]
        away = [np.array([0, 35, 3, 35, 3, 38, 0, 38], dtype=np.float64)]
        masks = PolygonMasks([full, away])
    else:
        m = torch.zeros(2, H, W, dtype=torch.bool)
        m[0] = True
        m[1, 35:38, 0:3] = True
        masks = BitMasks(m)
    inst = _fg_instances(masks, boxes, [1, 2])
    logits = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    loss = mask_rcnn_loss(logits, [inst])
    # region 0: target all ones in class 1's mask; region 1: all zeros in class 2's mask
    expected = torch.cat([F.softplus(-logits[0, 1]).flatten(), F.softplus(logits[1, 2]).flatten()]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 1].abs().sum() > 0
    # class agnostic: channel 0
    agn = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    expected = torch.cat([F.softplus(-agn[0, 0]).flatten(), F.softplus(agn[1, 0]).flatten()]).mean()
    torch.testing.assert_close(mask_rcnn_loss(agn, [inst]), expected)


def test_mask_loss_no_instances_and_missing_field():
    logits = torch.randn(0, 3, 8, 8, requires_grad=True)
    empty = _fg_instances(PolygonMasks([]), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    loss = mask_rcnn_loss(logits, [empty])
    assert loss.detach().item() == 0.0 and loss.requires_grad
    inst = Instances(
        (H, W), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])), gt_classes=torch.tensor([0])
    )
    with pytest.raises(ValueError, match=r"gt_masks.*mask head"):
        mask_rcnn_loss(torch.randn(1, 3, 8, 8), [inst])


def test_mask_inference_selects_predicted_class():
    logits = torch.randn(3, 4, 6, 6)
    a = Instances((H, W), pred_classes=torch.tensor([3, 0]))
    b = Instances((H, W), pred_classes=torch.tensor([2]))
    mask_rcnn_inference(logits, [a, b])
    torch.testing.assert_close(a.pred_masks, torch.stack([logits[0, 3], logits[1, 0]])[:, None].sigmoid())
    torch.testing.assert_close(b.pred_masks, logits[2, 2][None, None].sigmoid())
    c = Instances((H, W), pred_classes=torch.tensor([1]))
    mask_rcnn_inference(logits[:1, :1], [c])
    torch.testing.assert_close(c.pred_masks, logits[:1, :1].sigmoid())


def test_mask_head_names_shapes_and_errors():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=5, conv_dims=[16, 16, 12])
    names = set(head.state_dict())
    assert names == {
        "mask_fcn1.weight",
        "mask_fcn1.bias",
        "mask_fcn2.weight",
        "mask_fcn2.bias",
        "deconv.weight",
        "deconv.bias",
        "predictor.weight",
        "predictor.bias",
    }
    assert head.layers(torch.randn(2, 8, 7, 7)).shape == (2, 5, 14, 14)
    agn = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=5, conv_dims=[4], cls_agnostic=True)
    assert agn.predictor.out_channels == 1 and "mask_fcn1.weight" not in agn.state_dict()
    with pytest.raises(ValueError, match="conv_dims"):
        MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=5, conv_dims=[])
    with pytest.raises(ValueError, match="num_classes"):
        MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=0, conv_dims=[4])


def test_keypoint_loss_matches_hand_computation():
    s = 8
    boxes = torch.tensor([[0.0, 0.0, float(s), float(s)]] * 2)
    kp = torch.zeros(2, 3, 3)
    kp[0, 0] = torch.tensor([2.5, 5.5, 2])  # bin (x=2, y=5)
    kp[0, 1] = torch.tensor([7.2, 0.3, 2])  # bin (7, 0)
    kp[0, 2] = torch.tensor([1.0, 1.0, 0])  # not visible
    kp[1, 0] = torch.tensor([4.5, 4.5, 2])  # bin (4, 4)
    kp[1, 1] = torch.tensor([20.0, 4.0, 2])  # outside the box
    inst = Instances((H, W), proposal_boxes=Boxes(boxes), gt_keypoints=Keypoints(kp))
    logits = torch.randn(2, 3, s, s, dtype=torch.float64, requires_grad=True)
    flat = logits.view(6, s * s)
    ce = [
        F.cross_entropy(flat[0][None], torch.tensor([5 * s + 2])),
        F.cross_entropy(flat[1][None], torch.tensor([0 * s + 7])),
        F.cross_entropy(flat[3][None], torch.tensor([4 * s + 4])),
    ]
    total = sum(ce)
    torch.testing.assert_close(keypoint_rcnn_loss(logits, [inst], normalizer=None), total / 3)
    torch.testing.assert_close(keypoint_rcnn_loss(logits, [inst], normalizer=2.5), total / 2.5)
    # head: "visible" vs float normaliser (num_images * x)
    head = KRCNNConvDeconvUpsampleHead(
        ShapeSpec(channels=4), num_keypoints=3, conv_dims=[4], loss_normalizer=2.0
    )
    head.train()
    x = torch.randn(2, 4, 2, 2)
    out = head(x, [inst])
    with torch.no_grad():
        ref = keypoint_rcnn_loss(head.layers(x), [inst], normalizer=2.0)
    torch.testing.assert_close(out["loss_keypoint"].detach(), ref)


def test_keypoint_loss_nothing_visible_and_missing_field():
    kp = torch.zeros(1, 2, 3)
    inst = Instances(
        (H, W), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])), gt_keypoints=Keypoints(kp)
    )
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = keypoint_rcnn_loss(logits, [inst], normalizer=None)
    assert loss.detach().item() == 0.0 and loss.requires_grad
    bad = Instances((H, W), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])))
    with pytest.raises(ValueError, match=r"gt_keypoints.*keypoint head"):
        keypoint_rcnn_loss(logits, [bad], normalizer=None)


def test_keypoint_inference_and_head_names():
    head = KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=3, conv_dims=[6, 6]).eval()
    assert set(head.state_dict()) == {
        "conv_fcn1.weight",
        "conv_fcn1.bias",
        "conv_fcn2.weight",
        "conv_fcn2.bias",
        "score_lowres.weight",
        "score_lowres.bias",
    }
    x = torch.randn(3, 4, 7, 7)
    assert head.layers(x).shape == (3, 3, 28, 28)
    a = Instances((H, W), pred_boxes=Boxes(torch.tensor([[1.0, 2.0, 20.0, 30.0], [5.0, 5.0, 9.0, 8.0]])))
    b = Instances((H, W), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0]])))
    with torch.no_grad():
        head(x, [a, b])
        maps = head.layers(x)
    ref = heatmaps_to_keypoints(maps, torch.cat([a.pred_boxes.tensor, b.pred_boxes.tensor]))[:, :, [0, 1, 3]]
    torch.testing.assert_close(torch.cat([a.pred_keypoints, b.pred_keypoints]), ref)
    assert a.pred_keypoint_heatmaps.shape == (2, 3, 28, 28)
    keypoint_rcnn_inference(
        maps[:1], [Instances((H, W), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]])))]
    )
    with pytest.raises(ValueError, match="loss_normalizer"):
        KRCNNConvDeconvUpsampleHead(
            ShapeSpec(channels=4), num_keypoints=3, conv_dims=[4], loss_normalizer="all"
        )
    with pytest.raises(ValueError, match="num_keypoints"):
        KRCNNConvDeconvUpsampleHead(ShapeSpec(channels=4), num_keypoints=0, conv_dims=[4])


COMPONENTS = {
    ("roi_heads", "StandardROIHeads"): StandardROIHeads,
    ("roi_heads", "Res5ROIHeads"): Res5ROIHeads,
    ("box_head", "FastRCNNConvFCHead"): FastRCNNConvFCHead,
    ("mask_head", "MaskRCNNConvUpsampleHead"): MaskRCNNConvUpsampleHead,
    ("keypoint_head", "KRCNNConvDeconvUpsampleHead"): KRCNNConvDeconvUpsampleHead,
}


def test_plugin_registers_roi_head_components_lazily():
    registry = ComponentRegistry()
    _plugin.detcore_register_components(registry)
    for (kind, name), cls in COMPONENTS.items():
        entry = registry.resolve(kind, name)
        assert isinstance(entry.target, str) and ":" in entry.target
        assert registry.get(kind, name) is cls


@pytest.mark.parametrize(("kind", "name"), sorted(COMPONENTS))
def test_components_have_frozen_configs_with_detectron2_defaults(kind, name):
    cls = get_component(kind, name)
    assert cls is COMPONENTS[(kind, name)]
    cfg = cls.config_class()
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, dataclasses.fields(cfg)[0].name, None)


def test_default_configs_build():
    box = build_component(
        "box_head",
        "FastRCNNConvFCHead",
        dataclasses.replace(FastRCNNConvFCHead.config_class(), num_fc=2),
        ShapeSpec(channels=8, height=7, width=7),
    )
    assert box.fc1.in_features == 8 * 49 and box.fc2.out_features == 1024
    mask = build_component("mask_head", "MaskRCNNConvUpsampleHead", None, ShapeSpec(channels=8))
    assert mask.predictor.out_channels == 80 and mask.deconv.out_channels == 256
    kp = build_component("keypoint_head", "KRCNNConvDeconvUpsampleHead", None, ShapeSpec(channels=8))
    assert kp.score_lowres.out_channels == 17 and kp.loss_normalizer == "visible"
    assert hasattr(kp, "conv_fcn8") and not hasattr(kp, "conv_fcn9")
    # detectron2's defaults have no box-head layer (its default ROI heads is Res5ROIHeads): an error here
    with pytest.raises(ValueError, match="conv_dims and fc_dims"):
        build_component("roi_heads", "StandardROIHeads", None, {"res4": ShapeSpec(channels=16, stride=16)})
    cfg = StandardROIHeads.config_class(
        box_head=dataclasses.replace(FastRCNNConvFCHead.config_class(), num_fc=1)
    )
    roi = build_component("roi_heads", "StandardROIHeads", cfg, {"res4": ShapeSpec(channels=16, stride=16)})
    assert roi.box_head.fc1.in_features == 16 * 14 * 14
    assert roi.num_classes == 80 and roi.batch_size_per_image == 512 and roi.positive_fraction == 0.25
    assert roi.box_predictor.test_score_thresh == 0.05 and roi.box_predictor.test_nms_thresh == 0.5
    assert not roi.mask_on and not roi.keypoint_on
    c4 = build_component("roi_heads", "Res5ROIHeads", None, {"res4": ShapeSpec(channels=1024, stride=16)})
    assert c4.box_predictor.cls_score.in_features == 2048 and c4.res5[0].conv2.weight.shape == (
        512,
        512,
        3,
        3,
    )
    assert c4.pooler.output_size == (14, 14) and not c4.mask_on
