"""Reading detectron2 YAML configs (``cfg.dump()`` output or model-zoo files with ``_BASE_``) into a detcore
:class:`~detcore.archs.config.Config`.

Only the keys of the architectures detcore implements are read (``MODEL.*`` of the backbone, RPN, ROI heads and RetinaNet,
``INPUT.*`` sizes and format, ``TEST.DETECTIONS_PER_IMAGE``, ``TEST.AUG.*``); other sections (``SOLVER``, ``DATASETS``, ...)
are ignored. Keys absent from the file keep detectron2's defaults, which are detcore's defaults.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from detcore.archs.config import Config, _merge, config_from_dict

__all__ = ["from_detectron2_config"]

_BACKBONES = {
    "build_resnet_backbone": "resnet",
    "build_resnet_fpn_backbone": "resnet_fpn",
    "build_retinanet_resnet_fpn_backbone": "retinanet_resnet_fpn",
}

_RESNET_KEYS = [
    "DEPTH",
    "OUT_FEATURES",
    "NORM",
    "NUM_GROUPS",
    "WIDTH_PER_GROUP",
    "STRIDE_IN_1X1",
    "RES5_DILATION",
    "RES2_OUT_CHANNELS",
    "STEM_OUT_CHANNELS",
    "DEFORM_ON_PER_STAGE",
    "DEFORM_MODULATED",
    "DEFORM_NUM_GROUPS",
]
_RPN_KEYS = [
    "IN_FEATURES",
    "HEAD_NAME",
    "IOU_THRESHOLDS",
    "IOU_LABELS",
    "BATCH_SIZE_PER_IMAGE",
    "POSITIVE_FRACTION",
    "BBOX_REG_WEIGHTS",
    "BBOX_REG_LOSS_TYPE",
    "BBOX_REG_LOSS_WEIGHT",
    "SMOOTH_L1_BETA",
    "LOSS_WEIGHT",
    "BOUNDARY_THRESH",
    "PRE_NMS_TOPK_TRAIN",
    "PRE_NMS_TOPK_TEST",
    "POST_NMS_TOPK_TRAIN",
    "POST_NMS_TOPK_TEST",
    "NMS_THRESH",
]
_ROI_KEYS = [
    "NUM_CLASSES",
    "IN_FEATURES",
    "IOU_THRESHOLDS",
    "IOU_LABELS",
    "BATCH_SIZE_PER_IMAGE",
    "POSITIVE_FRACTION",
    "PROPOSAL_APPEND_GT",
]
_PREDICTOR_KEYS = [
    "BBOX_REG_WEIGHTS",
    "CLS_AGNOSTIC_BBOX_REG",
    "SMOOTH_L1_BETA",
    "BBOX_REG_LOSS_TYPE",
    "BBOX_REG_LOSS_WEIGHT",
    "USE_FED_LOSS",
    "USE_SIGMOID_CE",
    "FED_LOSS_FREQ_WEIGHT_POWER",
    "FED_LOSS_NUM_CLASSES",
]
_INPUT_KEYS = [
    "MIN_SIZE_TRAIN",
    "MIN_SIZE_TRAIN_SAMPLING",
    "MAX_SIZE_TRAIN",
    "MIN_SIZE_TEST",
    "MAX_SIZE_TEST",
    "MASK_FORMAT",
    "RANDOM_FLIP",
]


def _read_d2_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"_BASE_ cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 config {str(path)!r} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a detectron2 config must hold a mapping, got {type(data).__name__}")
    data = dict(data)
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: _BASE_ must be a file name, got {base!r}")
    return _merge(_read_d2_yaml(path.parent / base, (*seen, path)), data)


def _value(v: Any) -> Any:
    # detectron2 zoo files write tuples as strings, e.g. MIN_SIZE_TRAIN: (640, 672, 704)
    if isinstance(v, str) and v.strip().startswith("("):
        try:
            return list(ast.literal_eval(v))
        except (ValueError, SyntaxError):
            return v
    return v


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return _value(node)


_MISSING = object()


def from_detectron2_config(source: str | Path | Mapping[str, Any]) -> Config:
    """A detcore config from a detectron2 config.

    Args:
        source: a detectron2 YAML file (a full ``cfg.dump()`` or a zoo file with ``_BASE_``, resolved relative
            to the file) or the parsed mapping.

    Returns:
        Config: the equivalent detcore config (keys the file does not set keep detectron2's defaults).

    Raises:
        ValueError: a backbone, proposal generator or ROI heads name detcore does not map, or a value of the
            wrong type (named by its detcore key path).
    """
    if isinstance(source, Mapping):
        d2 = dict(source)
    elif isinstance(source, (str, Path)):
        d2 = _read_d2_yaml(Path(source))
    else:
        raise TypeError(f"source must be a path or a mapping, got {type(source).__name__}")
    sets: list[tuple[str, Any]] = []

    def take(d2_key: str, key: str) -> None:
        v = _get(d2, d2_key)
        if v is not _MISSING:
            sets.append((key, v))

    take("MODEL.META_ARCHITECTURE", "model.meta_architecture")
    take("MODEL.PIXEL_MEAN", "model.pixel_mean")
    take("MODEL.PIXEL_STD", "model.pixel_std")
    take("MODEL.WEIGHTS", "model.weights")
    take("INPUT.FORMAT", "model.input_format")
    take("VIS_PERIOD", "model.vis_period")
    for k in _INPUT_KEYS:
        take(f"INPUT.{k}", f"input.{k.lower()}")
    for k in ("ENABLED", "MIN_SIZES", "MAX_SIZE", "FLIP"):
        take(f"TEST.AUG.{k}", f"test.aug.{k.lower()}")

    # backbone
    backbone = _get(d2, "MODEL.BACKBONE.NAME")
    backbone = "build_resnet_backbone" if backbone is _MISSING else backbone
    if backbone not in _BACKBONES:
        raise ValueError(
            f"MODEL.BACKBONE.NAME {backbone!r} has no detcore equivalent; supported: {', '.join(_BACKBONES)}"
        )
    name = _BACKBONES[backbone]
    sets.append(("model.backbone_name", name))
    res = "model.backbone.resnet" if name != "resnet" else "model.backbone"
    for k in _RESNET_KEYS:
        take(f"MODEL.RESNETS.{k}", f"{res}.{k.lower()}")
    take("MODEL.BACKBONE.FREEZE_AT", f"{res}.freeze_at")
    if name != "resnet":
        for k in ("IN_FEATURES", "OUT_CHANNELS", "NORM", "FUSE_TYPE"):
            take(f"MODEL.FPN.{k}", f"model.backbone.fpn.{k.lower()}")

    # proposal generator (RetinaNet has none; detectron2's shared MODEL.ANCHOR_GENERATOR is then RetinaNet's)
    meta = _get(d2, "MODEL.META_ARCHITECTURE")
    pg = _get(d2, "MODEL.PROPOSAL_GENERATOR.NAME")
    pg = "RPN" if pg is _MISSING else pg
    if pg not in ("RPN", "PrecomputedProposals"):
        raise ValueError(
            f"MODEL.PROPOSAL_GENERATOR.NAME {pg!r} has no detcore equivalent (RPN, PrecomputedProposals)"
        )
    sets.append(("model.proposal_generator_name", pg))
    if pg == "RPN" and meta != "RetinaNet":
        p = "model.proposal_generator"
        take("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", f"{p}.min_size")
        for k in _RPN_KEYS:
            take(f"MODEL.RPN.{k}", f"{p}.{k.lower()}")
        take("MODEL.RPN.CONV_DIMS", f"{p}.head.conv_dims")
        take("MODEL.ANCHOR_GENERATOR.NAME", f"{p}.anchor_generator_name")
        for k in ("SIZES", "ASPECT_RATIOS", "OFFSET"):
            take(f"MODEL.ANCHOR_GENERATOR.{k}", f"{p}.anchor_generator.{k.lower()}")
        if _get(d2, "MODEL.ANCHOR_GENERATOR.NAME") == "RotatedAnchorGenerator":
            take("MODEL.ANCHOR_GENERATOR.ANGLES", f"{p}.anchor_generator.angles")

    # ROI heads
    roi = _get(d2, "MODEL.ROI_HEADS.NAME")
    roi = "Res5ROIHeads" if roi is _MISSING else roi
    if meta in (_MISSING, "GeneralizedRCNN"):
        if roi not in ("StandardROIHeads", "Res5ROIHeads"):
            raise ValueError(
                f"MODEL.ROI_HEADS.NAME {roi!r} has no detcore equivalent (StandardROIHeads, Res5ROIHeads)"
            )
        sets.append(("model.roi_heads_name", roi))
        r = "model.roi_heads"
        for k in _ROI_KEYS:
            take(f"MODEL.ROI_HEADS.{k}", f"{r}.{k.lower()}")
        take("MODEL.ROI_HEADS.SCORE_THRESH_TEST", f"{r}.box_predictor.test_score_thresh")
        take("MODEL.ROI_HEADS.NMS_THRESH_TEST", f"{r}.box_predictor.test_nms_thresh")
        take("TEST.DETECTIONS_PER_IMAGE", f"{r}.box_predictor.test_topk_per_image")
        for k in _PREDICTOR_KEYS:
            take(f"MODEL.ROI_BOX_HEAD.{k}", f"{r}.box_predictor.{k.lower()}")
        take("MODEL.MASK_ON", f"{r}.mask_on")
        take("MODEL.ROI_MASK_HEAD.NAME", f"{r}.mask_head_name")
        for k in ("NUM_CONV", "CONV_DIM", "NORM", "CLS_AGNOSTIC_MASK"):
            take(f"MODEL.ROI_MASK_HEAD.{k}", f"{r}.mask_head.{k.lower()}")
        if roi == "StandardROIHeads":
            take("MODEL.ROI_BOX_HEAD.NAME", f"{r}.box_head_name")
            for k in ("NUM_CONV", "CONV_DIM", "NUM_FC", "FC_DIM", "NORM"):
                take(f"MODEL.ROI_BOX_HEAD.{k}", f"{r}.box_head.{k.lower()}")
            take("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", f"{r}.train_on_pred_boxes")
            for branch, d2_branch in (
                ("box", "ROI_BOX_HEAD"),
                ("mask", "ROI_MASK_HEAD"),
                ("keypoint", "ROI_KEYPOINT_HEAD"),
            ):
                take(f"MODEL.{d2_branch}.POOLER_RESOLUTION", f"{r}.{branch}_pooler_resolution")
                take(f"MODEL.{d2_branch}.POOLER_SAMPLING_RATIO", f"{r}.{branch}_pooler_sampling_ratio")
                take(f"MODEL.{d2_branch}.POOLER_TYPE", f"{r}.{branch}_pooler_type")
            take("MODEL.KEYPOINT_ON", f"{r}.keypoint_on")
            take("MODEL.ROI_KEYPOINT_HEAD.NAME", f"{r}.keypoint_head_name")
            for k in ("NUM_KEYPOINTS", "CONV_DIMS", "LOSS_WEIGHT", "NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS"):
                take(f"MODEL.ROI_KEYPOINT_HEAD.{k}", f"{r}.keypoint_head.{k.lower()}")
            take("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", f"{r}.keypoint_head.batch_size_per_image")
            take("MODEL.ROI_HEADS.POSITIVE_FRACTION", f"{r}.keypoint_head.positive_fraction")
        else:
            take("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", f"{r}.pooler_resolution")
            take("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", f"{r}.pooler_sampling_ratio")
            take("MODEL.ROI_BOX_HEAD.POOLER_TYPE", f"{r}.pooler_type")
            for k in ("NUM_GROUPS", "WIDTH_PER_GROUP", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1", "NORM"):
                take(f"MODEL.RESNETS.{k}", f"{r}.{k.lower()}")
    elif meta == "RetinaNet":
        r = "model.retinanet"
        take("MODEL.RETINANET.NUM_CLASSES", f"{r}.num_classes")
        take("MODEL.RETINANET.IN_FEATURES", f"{r}.in_features")
        for k in ("NUM_CONVS", "PRIOR_PROB", "NORM"):
            take(f"MODEL.RETINANET.{k}", f"{r}.head.{k.lower()}")
        for k in (
            "IOU_THRESHOLDS",
            "IOU_LABELS",
            "FOCAL_LOSS_ALPHA",
            "FOCAL_LOSS_GAMMA",
            "BBOX_REG_LOSS_TYPE",
        ):
            take(f"MODEL.RETINANET.{k}", f"{r}.{k.lower()}")
        take("MODEL.RETINANET.BBOX_REG_WEIGHTS", f"{r}.bbox_reg_weights")
        take("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", f"{r}.smooth_l1_beta")
        take("MODEL.RETINANET.SCORE_THRESH_TEST", f"{r}.test_score_thresh")
        take("MODEL.RETINANET.TOPK_CANDIDATES_TEST", f"{r}.test_topk_candidates")
        take("MODEL.RETINANET.NMS_THRESH_TEST", f"{r}.test_nms_thresh")
        take("TEST.DETECTIONS_PER_IMAGE", f"{r}.max_detections_per_image")
        take("MODEL.ANCHOR_GENERATOR.NAME", f"{r}.anchor_generator_name")
        for k in ("SIZES", "ASPECT_RATIOS", "OFFSET"):
            take(f"MODEL.ANCHOR_GENERATOR.{k}", f"{r}.anchor_generator.{k.lower()}")
    elif meta != "ProposalNetwork":
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {meta!r} has no detcore equivalent (GeneralizedRCNN, ProposalNetwork, "
            "RetinaNet)"
        )

    data: dict[str, Any] = {}
    for key, value in sets:
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        data = _merge(data, nested)
    return config_from_dict(data)
