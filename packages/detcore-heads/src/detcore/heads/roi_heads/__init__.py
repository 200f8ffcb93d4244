"""ROI heads (detectron2's ``modeling.roi_heads``): box head, Fast R-CNN predictor, mask and keypoint heads,
and :class:`StandardROIHeads`."""

from detcore.heads.roi_heads.box_head import FastRCNNConvFCHead, FastRCNNConvFCHeadConfig
from detcore.heads.roi_heads.cascade_rcnn import CascadeROIHeads, CascadeROIHeadsConfig
from detcore.heads.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    FastRCNNOutputLayersConfig,
    fast_rcnn_inference,
    fast_rcnn_inference_single_image,
)
from detcore.heads.roi_heads.keypoint_head import (
    BaseKeypointRCNNHead,
    KRCNNConvDeconvUpsampleHead,
    KRCNNConvDeconvUpsampleHeadConfig,
    keypoint_rcnn_inference,
    keypoint_rcnn_loss,
)
from detcore.heads.roi_heads.mask_head import (
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    MaskRCNNConvUpsampleHeadConfig,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detcore.heads.roi_heads.roi_heads import (
    Res5ROIHeads,
    Res5ROIHeadsConfig,
    ROIHeads,
    StandardROIHeads,
    StandardROIHeadsConfig,
    add_ground_truth_to_proposals,
    select_foreground_proposals,
    select_proposals_with_visible_keypoints,
)
from detcore.heads.roi_heads.rotated_fast_rcnn import (
    RotatedFastRCNNOutputLayers,
    RROIHeads,
    RROIHeadsConfig,
    fast_rcnn_inference_rotated,
    fast_rcnn_inference_single_image_rotated,
)

__all__ = [
    "BaseKeypointRCNNHead",
    "BaseMaskRCNNHead",
    "CascadeROIHeads",
    "CascadeROIHeadsConfig",
    "FastRCNNConvFCHead",
    "FastRCNNConvFCHeadConfig",
    "FastRCNNOutputLayers",
    "FastRCNNOutputLayersConfig",
    "KRCNNConvDeconvUpsampleHead",
    "KRCNNConvDeconvUpsampleHeadConfig",
    "MaskRCNNConvUpsampleHead",
    "MaskRCNNConvUpsampleHeadConfig",
    "ROIHeads",
    "RROIHeads",
    "RROIHeadsConfig",
    "Res5ROIHeads",
    "Res5ROIHeadsConfig",
    "RotatedFastRCNNOutputLayers",
    "StandardROIHeads",
    "StandardROIHeadsConfig",
    "add_ground_truth_to_proposals",
    "fast_rcnn_inference",
    "fast_rcnn_inference_rotated",
    "fast_rcnn_inference_single_image",
    "fast_rcnn_inference_single_image_rotated",
    "keypoint_rcnn_inference",
    "keypoint_rcnn_loss",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
]
