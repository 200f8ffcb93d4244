"""Reading detectron2 YAML configs (``cfg.dump()`` output or model-zoo files with ``_BASE_``) into a detcore
:class:`~detcore.archs.config.Config`.

The keys of the architectures detcore implements are read: ``MODEL.*`` of the backbone (ResNet, FPN), the
proposal generator (RPN, RRPN), the ROI heads (Res5ROIHeads, StandardROIHeads, CascadeROIHeads, RROIHeads with
their box / mask / keypoint heads), RetinaNet, FCOS, the semantic segmentation head and PanopticFPN;
``INPUT.*`` sizes and format, ``TEST.DETECTIONS_PER_IMAGE``, ``TEST.AUG.*`` (``cfg.test.aug``), ``SOLVER.*`` (``cfg.solver``), ``DATALOADER.*``
(``cfg.dataloader``) and ``DATASETS.TRAIN`` / ``DATASETS.TEST`` (``cfg.datasets``). Other keys are ignored.
Keys absent from the file keep detectron2's defaults, which are detcore's defaults. The zoo's
``!!python/object/apply:eval`` values (Base-RetinaNet.yaml's anchor sizes) are evaluated when they are plain
arithmetic over numbers and lists (no names other than comprehension variables, no calls or attributes).

FCOS exists in detectron2 only as a LazyConfig (``configs/common/models/fcos.py``). detcore reads it from a
YAML with ``MODEL.META_ARCHITECTURE: "FCOS"`` and keys named as the arguments of detectron2's ``FCOS`` and
``FCOSHead`` classes (defaults: those of detectron2's FCOS LazyConfig)::

    MODEL.FCOS.NUM_CLASSES                -> model.fcos.num_classes
    MODEL.FCOS.HEAD_IN_FEATURES           -> model.fcos.in_features
    MODEL.FCOS.CENTER_SAMPLING_RADIUS     -> model.fcos.center_sampling_radius
    MODEL.FCOS.FOCAL_LOSS_ALPHA / _GAMMA  -> model.fcos.focal_loss_alpha / focal_loss_gamma
    MODEL.FCOS.TEST_SCORE_THRESH          -> model.fcos.test_score_thresh
    MODEL.FCOS.TEST_TOPK_CANDIDATES       -> model.fcos.test_topk_candidates
    MODEL.FCOS.TEST_NMS_THRESH            -> model.fcos.test_nms_thresh
    MODEL.FCOS.MAX_DETECTIONS_PER_IMAGE   -> model.fcos.max_detections_per_image (else TEST.DETECTIONS_PER_IMAGE)
    MODEL.FCOS.HEAD.CONV_DIMS / NORM / PRIOR_PROB -> model.fcos.head.conv_dims / norm / prior_prob
    MODEL.FCOS.HEAD.NUM_CONVS             -> model.fcos.head.num_convs (detcore's; CONV_DIMS unset)

With ``MODEL.BACKBONE.NAME: "build_retinanet_resnet_fpn_backbone"`` (or detcore's
``"build_fcos_resnet_fpn_backbone"``) an FCOS model gets the ``fcos_resnet_fpn`` backbone, whose P6/P7 are
computed from P5 as detectron2's FCOS config sets (``model.backbone.top_block.in_feature = "p5"``).
"""

from __future__ import annotations

import ast
import operator
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
    "build_fcos_resnet_fpn_backbone": "fcos_resnet_fpn",
}

_META_ARCHS = ("GeneralizedRCNN", "ProposalNetwork", "RetinaNet", "FCOS", "SemanticSegmentor", "PanopticFPN")
_ROI_HEADS = ("StandardROIHeads", "Res5ROIHeads", "CascadeROIHeads", "RROIHeads")
_PROPOSAL_GENERATORS = ("RPN", "RRPN", "PrecomputedProposals")

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
_SOLVER_KEYS = [
    "IMS_PER_BATCH",
    "BASE_LR",
    "BASE_LR_END",
    "MOMENTUM",
    "NESTEROV",
    "WEIGHT_DECAY",
    "WEIGHT_DECAY_NORM",
    "WEIGHT_DECAY_BIAS",
    "BIAS_LR_FACTOR",
    "LR_SCHEDULER_NAME",
    "GAMMA",
    "STEPS",
    "MAX_ITER",
    "WARMUP_FACTOR",
    "WARMUP_ITERS",
    "WARMUP_METHOD",
    "CHECKPOINT_PERIOD",
]
_DATALOADER_KEYS = [
    "NUM_WORKERS",
    "ASPECT_RATIO_GROUPING",
    "FILTER_EMPTY_ANNOTATIONS",
    "SAMPLER_TRAIN",
    "REPEAT_THRESHOLD",
]
_SEM_SEG_KEYS = {
    "IN_FEATURES": "in_features",
    "IGNORE_VALUE": "ignore_value",
    "NUM_CLASSES": "num_classes",
    "CONVS_DIM": "conv_dims",
    "COMMON_STRIDE": "common_stride",
    "NORM": "norm",
    "LOSS_WEIGHT": "loss_weight",
}
_FCOS_KEYS = {
    "NUM_CLASSES": "num_classes",
    "HEAD_IN_FEATURES": "in_features",
    "CENTER_SAMPLING_RADIUS": "center_sampling_radius",
    "FOCAL_LOSS_ALPHA": "focal_loss_alpha",
    "FOCAL_LOSS_GAMMA": "focal_loss_gamma",
    "TEST_SCORE_THRESH": "test_score_thresh",
    "TEST_TOPK_CANDIDATES": "test_topk_candidates",
    "TEST_NMS_THRESH": "test_nms_thresh",
    "MAX_DETECTIONS_PER_IMAGE": "max_detections_per_image",
}
_FCOS_HEAD_KEYS = {
    "CONV_DIMS": "conv_dims",
    "NORM": "norm",
    "PRIOR_PROB": "prior_prob",
    "NUM_CONVS": "num_convs",
}
_INPUT_KEYS = [
    "MIN_SIZE_TRAIN",
    "MIN_SIZE_TRAIN_SAMPLING",
    "MAX_SIZE_TRAIN",
    "MIN_SIZE_TEST",
    "MAX_SIZE_TEST",
    "MASK_FORMAT",
    "RANDOM_FLIP",
]


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARYOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _safe_eval(expr: str) -> Any:
    """detectron2's ``!!python/object/apply:eval ["<expr>"]``, interpreted (never ``eval``) for plain
    arithmetic: numbers, lists / tuples, ``+ - * / // % **`` on numbers (exponents at most 64 in magnitude),
    unary ``-``/``+`` and list comprehensions ``[... for x in <list>]``; anything else is a ValueError."""

    def fail(why: str) -> ValueError:
        return ValueError(
            f"!!python/object/apply:eval: {why} in {expr!r} (only arithmetic over numbers and lists)"
        )

    def number(v: Any) -> int | float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(f"arithmetic on a {type(v).__name__}")
        return v

    def ev(node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body, env)
        if isinstance(node, ast.Constant):
            return number(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise fail(f"unknown name {node.id!r}")
            return env[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e, env) for e in node.elts]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARYOPS:
            return _UNARYOPS[type(node.op)](number(ev(node.operand, env)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = number(ev(node.left, env)), number(ev(node.right, env))
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise fail(f"exponent {b}")
            try:
                return _BINOPS[type(node.op)](a, b)
            except (ArithmeticError, ValueError) as e:
                raise fail(str(e)) from None
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            if not isinstance(gen.target, ast.Name) or gen.ifs or gen.is_async:
                raise fail("a comprehension other than [... for x in <list>]")
            items = ev(gen.iter, env)
            if not isinstance(items, list):
                raise fail("a comprehension over a number")
            return [ev(node.elt, {**env, gen.target.id: v}) for v in items]
        raise fail(f"{type(node).__name__}")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"!!python/object/apply:eval: cannot parse {expr!r}: {e}") from e
    return ev(tree, {})


class _D2Loader(yaml.SafeLoader):
    """SafeLoader plus detectron2's ``!!python/object/apply:eval`` (restricted, see :func:`_safe_eval`)."""


def _construct_eval(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    args = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else None
    if not args or len(args) != 1 or not isinstance(args[0], str):
        raise ValueError("!!python/object/apply:eval takes one string argument")
    return _safe_eval(args[0])


_D2Loader.add_constructor("tag:yaml.org,2002:python/object/apply:eval", _construct_eval)


def _read_d2_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"_BASE_ cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise FileNotFoundError(f"detectron2 config {str(path)!r} not found")
    data = yaml.load(path.read_text(), Loader=_D2Loader) or {}  # a SafeLoader subclass
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
        ValueError: a meta-architecture, backbone, proposal generator or ROI heads name detcore does not map,
            a setting detcore does not implement (named by its detectron2 key), or a value of the wrong type
            (named by its detcore key path).
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

    def require(d2_key: str, supported: Any, what: str) -> None:
        v = _get(d2, d2_key)
        if v is not _MISSING and v != supported:
            raise ValueError(f"{d2_key} {v!r} is not supported by detcore ({what})")

    meta = _get(d2, "MODEL.META_ARCHITECTURE")
    meta = "GeneralizedRCNN" if meta is _MISSING else meta
    if meta not in _META_ARCHS:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {meta!r} has no detcore equivalent ({', '.join(_META_ARCHS)})"
        )
    dense = meta in ("RetinaNet", "FCOS")
    sets.append(("model.meta_architecture", meta))
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
    if meta == "FCOS" and name == "retinanet_resnet_fpn":
        name = "fcos_resnet_fpn"  # detectron2's FCOS: P6/P7 from P5 (top_block.in_feature = "p5")
    sets.append(("model.backbone_name", name))
    res = "model.backbone.resnet" if name != "resnet" else "model.backbone"
    for k in _RESNET_KEYS:
        take(f"MODEL.RESNETS.{k}", f"{res}.{k.lower()}")
    take("MODEL.BACKBONE.FREEZE_AT", f"{res}.freeze_at")
    if name != "resnet":
        for k in ("IN_FEATURES", "OUT_CHANNELS", "NORM", "FUSE_TYPE"):
            take(f"MODEL.FPN.{k}", f"model.backbone.fpn.{k.lower()}")

    # proposal generator (RetinaNet / FCOS have none; detectron2's shared MODEL.ANCHOR_GENERATOR is then
    # RetinaNet's)
    pg = _get(d2, "MODEL.PROPOSAL_GENERATOR.NAME")
    pg = "RPN" if pg is _MISSING else pg
    if pg not in _PROPOSAL_GENERATORS:
        raise ValueError(
            f"MODEL.PROPOSAL_GENERATOR.NAME {pg!r} has no detcore equivalent ({', '.join(_PROPOSAL_GENERATORS)})"
        )
    sets.append(("model.proposal_generator_name", pg))
    if pg in ("RPN", "RRPN") and not dense:
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

    if not dense:
        _roi_heads(d2, take, sets)
    else:
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
    if meta == "FCOS":
        fcos = _get(d2, "MODEL.FCOS")
        fcos = {} if fcos is _MISSING else fcos
        if not isinstance(fcos, Mapping):
            raise ValueError(f"MODEL.FCOS must be a mapping, got {type(fcos).__name__}")
        head = fcos.get("HEAD", {})
        unknown = [f"MODEL.FCOS.{k}" for k in fcos if k not in _FCOS_KEYS and k != "HEAD"]
        unknown += [f"MODEL.FCOS.HEAD.{k}" for k in (head if isinstance(head, Mapping) else {})
                    if k not in _FCOS_HEAD_KEYS]  # fmt: skip
        if unknown:
            raise ValueError(
                f"unknown FCOS key {unknown[0]}; valid: MODEL.FCOS.{{{', '.join(_FCOS_KEYS)}, HEAD}}, "
                f"MODEL.FCOS.HEAD.{{{', '.join(_FCOS_HEAD_KEYS)}}}"
            )
        take("TEST.DETECTIONS_PER_IMAGE", "model.fcos.max_detections_per_image")
        for k, v in _FCOS_KEYS.items():
            take(f"MODEL.FCOS.{k}", f"model.fcos.{v}")
        for k, v in _FCOS_HEAD_KEYS.items():
            take(f"MODEL.FCOS.HEAD.{k}", f"model.fcos.head.{v}")

    # semantic segmentation head, panoptic combination
    take("MODEL.SEM_SEG_HEAD.NAME", "model.sem_seg_head_name")
    for k, v in _SEM_SEG_KEYS.items():
        take(f"MODEL.SEM_SEG_HEAD.{k}", f"model.sem_seg_head.{v}")
    if meta == "PanopticFPN":
        require("MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT", 1.0, "the instance losses are not reweighted")
        require("MODEL.PANOPTIC_FPN.COMBINE.ENABLED", True, "PanopticFPN always combines its outputs")
    take("MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH", "model.panoptic.combine_overlap_thresh")
    take("MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "model.panoptic.combine_stuff_area_thresh")
    take(
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
        "model.panoptic.combine_instances_score_thresh",
    )

    # solver, data loader, datasets
    for k in _SOLVER_KEYS:
        take(f"SOLVER.{k}", f"solver.{k.lower()}")
    for k in ("ENABLED", "CLIP_TYPE", "CLIP_VALUE", "NORM_TYPE"):
        take(f"SOLVER.CLIP_GRADIENTS.{k}", f"solver.clip_gradients.{k.lower()}")
    take("SOLVER.AMP.ENABLED", "solver.amp.enabled")
    require("SOLVER.REFERENCE_WORLD_SIZE", 0, "the solver is not rescaled for the number of processes")
    for k in _DATALOADER_KEYS:
        take(f"DATALOADER.{k}", f"dataloader.{k.lower()}")
    require("DATALOADER.REPEAT_SQRT", True, "repeat factors are sqrt(threshold / frequency)")
    take("DATASETS.TRAIN", "datasets.train")
    take("DATASETS.TEST", "datasets.test")

    data: dict[str, Any] = {}
    for key, value in sets:
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        data = _merge(data, nested)
    return config_from_dict(data)


def _roi_heads(d2: Mapping[str, Any], take: Any, sets: list[tuple[str, Any]]) -> None:
    """The ROI heads of an R-CNN (also set for ProposalNetwork / SemanticSegmentor, which do not use them,
    as detectron2's configs carry them)."""
    roi = _get(d2, "MODEL.ROI_HEADS.NAME")
    roi = "Res5ROIHeads" if roi is _MISSING else roi
    if roi not in _ROI_HEADS:
        raise ValueError(f"MODEL.ROI_HEADS.NAME {roi!r} has no detcore equivalent ({', '.join(_ROI_HEADS)})")
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
    if roi == "Res5ROIHeads":
        take("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", f"{r}.pooler_resolution")
        take("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", f"{r}.pooler_sampling_ratio")
        take("MODEL.ROI_BOX_HEAD.POOLER_TYPE", f"{r}.pooler_type")
        for k in ("NUM_GROUPS", "WIDTH_PER_GROUP", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1", "NORM"):
            take(f"MODEL.RESNETS.{k}", f"{r}.{k.lower()}")
        return
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
    if roi == "CascadeROIHeads":
        take("MODEL.ROI_BOX_CASCADE_HEAD.IOUS", f"{r}.cascade_ious")
        take("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS", f"{r}.cascade_bbox_reg_weights")
