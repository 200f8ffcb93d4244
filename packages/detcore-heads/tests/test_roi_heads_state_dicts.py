"""ROI heads built from configs have exactly detectron2's ``roi_heads.*`` state-dict names and shapes
(reference lists in ``reference/detectron2-state-dicts``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detcore.heads.build import build_component
from detcore.heads.roi_heads import Res5ROIHeadsConfig, StandardROIHeadsConfig
from detcore.ops import ShapeSpec

FPN_SHAPES = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 7)}
C4_SHAPES = {"res4": ShapeSpec(channels=1024, stride=16)}


def _cases():
    fpn = StandardROIHeadsConfig.base_rcnn_fpn
    return {
        "faster_rcnn_R_50_FPN": ("StandardROIHeads", fpn(), FPN_SHAPES),
        "mask_rcnn_R_50_FPN": ("StandardROIHeads", fpn(mask_on=True), FPN_SHAPES),
        "keypoint_rcnn_R_50_FPN": (
            "StandardROIHeads",
            dataclasses.replace(fpn(num_classes=1), keypoint_on=True),
            FPN_SHAPES,
        ),
        "faster_rcnn_R_50_C4": ("Res5ROIHeads", Res5ROIHeadsConfig(), C4_SHAPES),
        "mask_rcnn_R_50_C4": ("Res5ROIHeads", Res5ROIHeadsConfig(mask_on=True), C4_SHAPES),
    }


def _reference(reference_dir, name):
    path = reference_dir / "detectron2-state-dicts" / f"{name}.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.startswith("roi_heads."):
            continue
        key, shape, _ = line.split("\t")
        out[key[len("roi_heads.") :]] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


@pytest.mark.parametrize("name", sorted(_cases()))
def test_roi_heads_state_dict_matches_detectron2(reference_dir, name):
    component, cfg, shapes = _cases()[name]
    expected = _reference(reference_dir, name)
    with torch.device("meta"):
        model = build_component("roi_heads", component, cfg, shapes)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
