"""detcore.ops: native ops as torch custom ops (namespace ``torch.ops.detcore``), nn layers and losses,
with the semantics of ``detectron2.layers``."""

from detcore.ops._dispatch import MissingKernelError
from detcore.ops._native import NativeOpsUnavailableError
from detcore.ops.box_iou import box_iou
from detcore.ops.nms import batched_nms, nms
from detcore.ops.paste_masks import paste_masks_in_image
from detcore.ops.rotated import batched_nms_rotated, box_iou_rotated, nms_rotated

__all__ = [
    "MissingKernelError",
    "NativeOpsUnavailableError",
    "batched_nms",
    "batched_nms_rotated",
    "box_iou",
    "box_iou_rotated",
    "nms",
    "nms_rotated",
    "paste_masks_in_image",
]
