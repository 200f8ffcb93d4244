"""detcore.ops: native ops as torch custom ops (namespace ``torch.ops.detcore``), nn layers and losses,
with the semantics of ``detectron2.layers``."""

from detcore.ops._dispatch import MissingKernelError
from detcore.ops._native import NativeOpsUnavailableError
from detcore.ops.nms import batched_nms, nms
from detcore.ops.roi_align import ROIAlign, roi_align
from detcore.ops.roi_align_rotated import ROIAlignRotated, roi_align_rotated
from detcore.ops.roi_pool import ROIPool, roi_pool

__all__ = [
    "MissingKernelError",
    "NativeOpsUnavailableError",
    "ROIAlign",
    "ROIAlignRotated",
    "ROIPool",
    "batched_nms",
    "nms",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
]
