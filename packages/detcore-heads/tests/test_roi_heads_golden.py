"""Golden parity of StandardROIHeads (box + mask branches) with detectron2 on the tiny Mask R-CNN
(``reference/golden/mask_rcnn_tiny``): stored FPN features and proposals in, box predictor outputs,
detections and mask probabilities out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcore.heads import Box2BoxTransform, Matcher, ROIPooler
from detcore.heads.build import build_component
from detcore.heads.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    MaskRCNNConvUpsampleHead,
    StandardROIHeads,
    StandardROIHeadsConfig,
)
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, Instances

IMAGES = ["00000", "00001", "00002", "00003", "00004", "00005", "blank_noise"]
IN_FEATURES = ["p2", "p3", "p4", "p5"]
SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


@pytest.fixture(scope="module")
def golden_dir(reference_dir):
    d = reference_dir / "golden" / "mask_rcnn_tiny"
    if not (d / "model.pth").is_file():
        pytest.fail("mask_rcnn_tiny golden data not found beside the checkout")
    return d


def _roi_state_dict(golden_dir):
    sd = torch.load(golden_dir / "model.pth", map_location="cpu")
    return {k[len("roi_heads.") :]: v for k, v in sd.items() if k.startswith("roi_heads.")}


def _build_by_hand() -> StandardROIHeads:
    box_head = FastRCNNConvFCHead(ShapeSpec(channels=64, height=7, width=7), conv_dims=[], fc_dims=[128, 128])
    predictor = FastRCNNOutputLayers(
        box_head.output_shape,
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=3,
        test_score_thresh=0.05,
        test_nms_thresh=0.5,
        test_topk_per_image=100,
    )
    return StandardROIHeads(
        num_classes=3,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        box_in_features=IN_FEATURES,
        box_pooler=ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
        box_head=box_head,
        box_predictor=predictor,
        mask_in_features=IN_FEATURES,
        mask_pooler=ROIPooler(14, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
        mask_head=MaskRCNNConvUpsampleHead(ShapeSpec(channels=64), num_classes=3, conv_dims=[64] * 5),
    )


def _build_from_config() -> StandardROIHeads:
    cfg = StandardROIHeadsConfig.base_rcnn_fpn(mask_on=True, num_classes=3)
    import dataclasses

    cfg = dataclasses.replace(
        cfg,
        box_head=dataclasses.replace(cfg.box_head, fc_dim=128),
        mask_head=dataclasses.replace(cfg.mask_head, conv_dim=64),
    )
    shapes = {f"p{i}": ShapeSpec(channels=64, stride=2**i) for i in range(2, 7)}
    return build_component("roi_heads", "StandardROIHeads", cfg, shapes)


@pytest.fixture(scope="module", params=["by_hand", "from_config"])
def roi_heads(request, golden_dir):
    model = _build_by_hand() if request.param == "by_hand" else _build_from_config()
    missing, unexpected = model.load_state_dict(_roi_state_dict(golden_dir), strict=True)
    assert not missing and not unexpected
    return model.eval()


def _inputs(golden_dir, name):
    d = np.load(golden_dir / f"{name}.npz")
    h, w = (int(v) for v in d["image_size_resized"])
    features = {f: torch.from_numpy(d[f"features/{f}"])[None] for f in IN_FEATURES if f"features/{f}" in d}
    proposals = Instances((h, w), proposal_boxes=Boxes(torch.from_numpy(d["proposals/boxes"])))
    proposals.objectness_logits = torch.from_numpy(d["proposals/objectness_logits"])
    return d, features, proposals


@pytest.mark.parametrize("name", IMAGES)
def test_box_predictor_outputs_match_detectron2(roi_heads, golden_dir, name):
    d, features, proposals = _inputs(golden_dir, name)
    with torch.no_grad():
        pooled = roi_heads.box_pooler([features[f] for f in IN_FEATURES], [proposals.proposal_boxes])
        logits, deltas = roi_heads.box_predictor(roi_heads.box_head(pooled))
    torch.testing.assert_close(logits, torch.from_numpy(d["box_predictor/class_logits"]), atol=5e-3, rtol=0)
    torch.testing.assert_close(
        deltas, torch.from_numpy(d["box_predictor/proposal_deltas"]), atol=2e-3, rtol=0
    )


@pytest.mark.parametrize("name", IMAGES)
def test_detections_and_masks_match_detectron2(roi_heads, golden_dir, name):
    d, features, proposals = _inputs(golden_dir, name)
    with torch.no_grad():
        instances, losses = roi_heads(None, features, [proposals])
    assert losses == {}
    (inst,) = instances
    assert inst.image_size == tuple(int(v) for v in d["image_size_resized"])
    assert len(inst) == d["raw/scores"].shape[0]
    torch.testing.assert_close(inst.pred_classes, torch.from_numpy(d["raw/pred_classes"]), atol=0, rtol=0)
    torch.testing.assert_close(inst.scores, torch.from_numpy(d["raw/scores"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        inst.pred_boxes.tensor, torch.from_numpy(d["raw/pred_boxes"]), atol=1e-2, rtol=0
    )
    torch.testing.assert_close(inst.pred_masks, torch.from_numpy(d["raw/mask_probs"]), atol=2e-3, rtol=0)
