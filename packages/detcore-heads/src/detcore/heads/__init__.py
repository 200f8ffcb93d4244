"""detcore.heads: anchors, box coders, matcher, sampling, poolers, RPN, ROI heads, dense heads.

Components are registered with the plugin registry under detectron2's class names (kinds
"anchor_generator", "rpn_head", "proposal_generator", "roi_heads", "box_head", "mask_head",
"keypoint_head"), so detectron2 config ``NAME`` values map directly.
Each built-in class has a frozen config dataclass (``config_class``) with detectron2's defaults and a
``from_config(cfg, input_shape) -> kwargs`` classmethod; :func:`build_component` builds one by name."""

from detcore.heads.anchor_generator import (
    DefaultAnchorGenerator,
    DefaultAnchorGeneratorConfig,
    RotatedAnchorGenerator,
    RotatedAnchorGeneratorConfig,
)
from detcore.heads.box_regression import (
    Box2BoxTransform,
    Box2BoxTransformLinear,
    Box2BoxTransformRotated,
)
from detcore.heads.build import (
    build_anchor_generator,
    build_component,
    build_proposal_generator,
    build_rpn_head,
)
from detcore.heads.dense import (
    EMALossNormalizer,
    FCOSHead,
    FCOSHeadConfig,
    FCOSLogic,
    RetinaNetHead,
    RetinaNetHeadConfig,
    RetinaNetLogic,
    permute_to_N_HWA_K,
)
from detcore.heads.matcher import (
    Matcher,
)
from detcore.heads.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from detcore.heads.proposal_generator import (
    RPN,
    RRPN,
    RPNConfig,
    RRPNConfig,
    StandardRPNHead,
    StandardRPNHeadConfig,
    find_top_rpn_proposals,
    find_top_rrpn_proposals,
)
from detcore.heads.roi_heads import (
    CascadeROIHeads,
    CascadeROIHeadsConfig,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    Res5ROIHeads,
    ROIHeads,
    RROIHeads,
    RROIHeadsConfig,
    StandardROIHeads,
    fast_rcnn_inference,
    fast_rcnn_inference_rotated,
)
from detcore.heads.sampling import (
    subsample_labels,
)
from detcore.heads.sem_seg import (
    SemSegFPNHead,
    SemSegFPNHeadConfig,
)

__all__ = [
    "RPN",
    "RRPN",
    "Box2BoxTransform",
    "Box2BoxTransformLinear",
    "Box2BoxTransformRotated",
    "CascadeROIHeads",
    "CascadeROIHeadsConfig",
    "DefaultAnchorGenerator",
    "DefaultAnchorGeneratorConfig",
    "EMALossNormalizer",
    "FCOSHead",
    "FCOSHeadConfig",
    "FCOSLogic",
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "KRCNNConvDeconvUpsampleHead",
    "MaskRCNNConvUpsampleHead",
    "Matcher",
    "ROIHeads",
    "ROIPooler",
    "RPNConfig",
    "RROIHeads",
    "RROIHeadsConfig",
    "RRPNConfig",
    "Res5ROIHeads",
    "RetinaNetHead",
    "RetinaNetHeadConfig",
    "RetinaNetLogic",
    "RotatedAnchorGenerator",
    "RotatedAnchorGeneratorConfig",
    "SemSegFPNHead",
    "SemSegFPNHeadConfig",
    "StandardROIHeads",
    "StandardRPNHead",
    "StandardRPNHeadConfig",
    "assign_boxes_to_levels",
    "build_anchor_generator",
    "build_component",
    "build_proposal_generator",
    "build_rpn_head",
    "convert_boxes_to_pooler_format",
    "fast_rcnn_inference",
    "fast_rcnn_inference_rotated",
    "find_top_rpn_proposals",
    "find_top_rrpn_proposals",
    "permute_to_N_HWA_K",
    "subsample_labels",
]
