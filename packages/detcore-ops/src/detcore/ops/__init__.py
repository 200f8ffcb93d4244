"""detcore.ops: native ops as torch custom ops (namespace ``torch.ops.detcore``), nn layers and losses,
with the semantics of ``detectron2.layers``."""

from detcore.ops._dispatch import MissingKernelError
from detcore.ops._native import NativeOpsUnavailableError
from detcore.ops.deform_conv import DeformConv, ModulatedDeformConv, deform_conv2d
from detcore.ops.nms import batched_nms, nms

__all__ = [
    "DeformConv",
    "MissingKernelError",
    "ModulatedDeformConv",
    "NativeOpsUnavailableError",
    "batched_nms",
    "deform_conv2d",
    "nms",
]
