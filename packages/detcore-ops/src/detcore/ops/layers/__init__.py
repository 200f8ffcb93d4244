"""nn layers with detectron2's ``detectron2.layers`` semantics and state-dict names (pure PyTorch)."""

from detcore.ops.layers.aspp import ASPP
from detcore.ops.layers.batch_norm import (
    FrozenBatchNorm2d,
    LayerNorm,
    NaiveSyncBatchNorm,
    fold_frozen_bn_into_conv,
    get_norm,
)
from detcore.ops.layers.blocks import CNNBlockBase, DepthwiseSeparableConv2d
from detcore.ops.layers.shape_spec import ShapeSpec
from detcore.ops.layers.weight_init import c2_msra_fill, c2_xavier_fill
from detcore.ops.layers.wrappers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Linear,
    cat,
    interpolate,
    nonzero_tuple,
)

__all__ = [
    "ASPP",
    "BatchNorm2d",
    "CNNBlockBase",
    "Conv2d",
    "ConvTranspose2d",
    "DepthwiseSeparableConv2d",
    "FrozenBatchNorm2d",
    "LayerNorm",
    "Linear",
    "NaiveSyncBatchNorm",
    "ShapeSpec",
    "c2_msra_fill",
    "c2_xavier_fill",
    "cat",
    "fold_frozen_bn_into_conv",
    "get_norm",
    "interpolate",
    "nonzero_tuple",
]
