"""One-stage dense detectors: RetinaNet and FCOS heads and their labelling / loss / inference logic."""

from detcore.heads.dense.dense_detector import (
    EMALossNormalizer,
    decode_multi_level_predictions,
    decode_per_level_predictions,
    dense_inference_single_image,
    permute_to_N_HWA_K,
    transpose_dense_predictions,
)
from detcore.heads.dense.fcos import (
    FCOSLogic,
    fcos_anchor_generator,
    fcos_ctrness_targets,
    fcos_label_anchors,
    fcos_match_anchors,
)
from detcore.heads.dense.fcos_head import FCOSHead, FCOSHeadConfig
from detcore.heads.dense.retinanet import (
    RetinaNetLogic,
    retinanet_anchor_generator_config,
    retinanet_label_anchors,
    retinanet_losses,
)
from detcore.heads.dense.retinanet_head import CycleBatchNormList, RetinaNetHead, RetinaNetHeadConfig

__all__ = [
    "CycleBatchNormList",
    "EMALossNormalizer",
    "FCOSHead",
    "FCOSHeadConfig",
    "FCOSLogic",
    "RetinaNetHead",
    "RetinaNetHeadConfig",
    "RetinaNetLogic",
    "decode_multi_level_predictions",
    "decode_per_level_predictions",
    "dense_inference_single_image",
    "fcos_anchor_generator",
    "fcos_ctrness_targets",
    "fcos_label_anchors",
    "fcos_match_anchors",
    "permute_to_N_HWA_K",
    "retinanet_anchor_generator_config",
    "retinanet_label_anchors",
    "retinanet_losses",
    "transpose_dense_predictions",
]
