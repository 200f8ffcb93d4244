"""detcore.ops: native ops as torch custom ops (namespace ``torch.ops.detcore``), nn layers and losses,
with the semantics of ``detectron2.layers``."""

from detcore.ops._dispatch import (
    MissingKernelError,
)
from detcore.ops._native import (
    NativeOpsUnavailableError,
)
from detcore.ops.box_iou import (
    box_iou,
)
from detcore.ops.deform_conv import (
    DeformConv,
    ModulatedDeformConv,
    deform_conv2d,
)
from detcore.ops.layers import (
    ASPP,
    BatchNorm2d,
    CNNBlockBase,
    Conv2d,
    ConvTranspose2d,
    DepthwiseSeparableConv2d,
    FrozenBatchNorm2d,
    LayerNorm,
    Linear,
    NaiveSyncBatchNorm,
    ShapeSpec,
    c2_msra_fill,
    c2_xavier_fill,
    cat,
    fold_frozen_bn_into_conv,
    get_norm,
    interpolate,
    nonzero_tuple,
)
from detcore.ops.losses import (
    ciou_loss,
    diou_loss,
    giou_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_jit,
    sigmoid_focal_loss_star,
    sigmoid_focal_loss_star_jit,
    smooth_l1_loss,
)
from detcore.ops.nms import (
    batched_nms,
    nms,
)
from detcore.ops.paste_masks import (
    paste_masks_in_image,
)
from detcore.ops.roi_align import (
    ROIAlign,
    roi_align,
)
from detcore.ops.roi_align_rotated import (
    ROIAlignRotated,
    roi_align_rotated,
)
from detcore.ops.roi_pool import (
    ROIPool,
    roi_pool,
)
from detcore.ops.rotated import (
    batched_nms_rotated,
    box_iou_rotated,
    nms_rotated,
)
from detcore.ops.winograd import (
    conv3x3_winograd,
    winograd_weight,
)

__all__ = [
    "ASPP",
    "BatchNorm2d",
    "CNNBlockBase",
    "Conv2d",
    "ConvTranspose2d",
    "DeformConv",
    "DepthwiseSeparableConv2d",
    "FrozenBatchNorm2d",
    "LayerNorm",
    "Linear",
    "MissingKernelError",
    "ModulatedDeformConv",
    "NaiveSyncBatchNorm",
    "NativeOpsUnavailableError",
    "ROIAlign",
    "ROIAlignRotated",
    "ROIPool",
    "ShapeSpec",
    "batched_nms",
    "batched_nms_rotated",
    "box_iou",
    "box_iou_rotated",
    "c2_msra_fill",
    "c2_xavier_fill",
    "cat",
    "ciou_loss",
    "conv3x3_winograd",
    "deform_conv2d",
    "diou_loss",
    "fold_frozen_bn_into_conv",
    "get_norm",
    "giou_loss",
    "interpolate",
    "nms",
    "nms_rotated",
    "nonzero_tuple",
    "paste_masks_in_image",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_jit",
    "sigmoid_focal_loss_star",
    "sigmoid_focal_loss_star_jit",
    "smooth_l1_loss",
    "winograd_weight",
]
