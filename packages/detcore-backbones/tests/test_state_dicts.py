"""detcore backbones have exactly detectron2's state-dict names and shapes (reference lists measured from it)."""

from __future__ import annotations

import pytest
import torch

from detcore.backbones import (
    ResNetConfig,
    ResNetFPNConfig,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from detcore.ops import ShapeSpec


def _read_backbone_keys(path) -> dict[str, tuple[list[int], str]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        if name.startswith("backbone."):
            out[name[len("backbone.") :]] = (eval(shape), dtype)
    return out


def _r50_fpn():
    return build_resnet_fpn_backbone(ResNetFPNConfig.base_rcnn_fpn(), ShapeSpec(channels=3))


def _r50_c4():
    return build_resnet_backbone(ResNetConfig(), ShapeSpec(channels=3))


def _r50_dc5():
    return build_resnet_backbone(ResNetConfig(out_features=["res5"], res5_dilation=2), ShapeSpec(channels=3))


def _x101_fpn():
    cfg = ResNetFPNConfig.base_rcnn_fpn(depth=101)
    cfg.resnet.num_groups = 32
    cfg.resnet.width_per_group = 8
    cfg.resnet.stride_in_1x1 = False
    return build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))


def _retinanet():
    return build_retinanet_resnet_fpn_backbone(ResNetFPNConfig.base_retinanet(), ShapeSpec(channels=3))


def _dconv_c3_c5():
    cfg = ResNetFPNConfig.base_rcnn_fpn()
    cfg.resnet.deform_on_per_stage = [False, True, True, True]
    cfg.resnet.deform_modulated = False
    return build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))


CASES = {
    "faster_rcnn_R_50_FPN": _r50_fpn,
    "mask_rcnn_R_50_FPN": _r50_fpn,
    "keypoint_rcnn_R_50_FPN": _r50_fpn,
    "cascade_mask_rcnn_R_50_FPN": _r50_fpn,
    "rpn_R_50_FPN": _r50_fpn,
    "panoptic_fpn_R_50": _r50_fpn,
    "semantic_R_50_FPN": _r50_fpn,
    "faster_rcnn_R_50_C4": _r50_c4,
    "mask_rcnn_R_50_C4": _r50_c4,
    "faster_rcnn_R_50_DC5": _r50_dc5,
    "faster_rcnn_X_101_32x8d_FPN": _x101_fpn,
    "retinanet_R_50_FPN": _retinanet,
    "mask_rcnn_R_50_FPN_dconv_c3-c5": _dconv_c3_c5,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_state_dict_matches_detectron2(reference_dir, name):
    expected = _read_backbone_keys(reference_dir / "detectron2-state-dicts" / f"{name}.txt")
    assert expected, name
    with torch.device("meta"):
        model = CASES[name]()
    got = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    mismatched = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert mismatched == {}
