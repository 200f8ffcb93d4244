"""detcore.ops: native ops as torch custom ops (namespace ``torch.ops.detcore``), nn layers and losses,
with the semantics of ``detectron2.layers``."""

from detcore.ops._dispatch import (
    MissingKernelError,
)
from detcore.ops._native import (
    NativeOpsUnavailableError,
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
    "ShapeSpec",
    "batched_nms",
    "c2_msra_fill",
    "c2_xavier_fill",
    "cat",
    "ciou_loss",
    "deform_conv2d",
    "diou_loss",
    "fold_frozen_bn_into_conv",
    "get_norm",
    "giou_loss",
    "interpolate",
    "nms",
    "nonzero_tuple",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_jit",
    "sigmoid_focal_loss_star",
    "sigmoid_focal_loss_star_jit",
    "smooth_l1_loss",
]
