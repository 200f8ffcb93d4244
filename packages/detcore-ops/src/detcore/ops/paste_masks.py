"""Pasting fixed-size instance masks into the image: ``detcore::paste_masks_in_image``."""

from __future__ import annotations

import mmap
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_true

from detcore.ops._checks import check_floating, check_same_device, check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads

__all__ = ["paste_masks_in_image"]


def _image_shape(image_shape: object) -> tuple[int, int]:
    if isinstance(image_shape, Tensor):
        image_shape = image_shape.tolist()
    if not isinstance(image_shape, Sequence) or isinstance(image_shape, str) or len(image_shape) != 2:
        raise TypeError(f"image_shape must be a (height, width) pair of ints, got {image_shape!r}")
    values = []
    for v in image_shape:
        if isinstance(v, torch.SymInt):  # a symbolic size under torch.export: asserted positive at run time
            torch._check(v > 0, lambda: "image_shape must be positive (height, width)")
            values.append(v)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"image_shape must be a (height, width) pair of ints, got {image_shape!r}")
        if v <= 0:
            raise ValueError(f"image_shape must be positive (height, width), got {tuple(image_shape)!r}")
        values.append(int(v))
    return values[0], values[1]


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor | object, image_shape: Sequence[int], threshold: float = 0.5
) -> Tensor:
    """Pastes per-instance masks (e.g. 28x28) into their boxes in an image of size ``image_shape``.

    detectron2's accurate variant: image pixel (x, y) samples the mask at its centre (x + 0.5, y + 0.5)
    mapped into the box, bilinearly as ``grid_sample(align_corners=False)`` with zero padding, and only
    pixels in ``[floor(x0) - 1, ceil(x1) + 1) x [floor(y0) - 1, ceil(y1) + 1)`` are sampled (the rest are 0),
    exactly as detectron2 does on CPU; outputs are bit-identical to detectron2's. Differences: a box
    entirely outside the image gives an all-zero mask where detectron2 raises ("upper bound and lower bound
    inconsistent with step sign"), a box with a non-finite coordinate gives an all-zero mask, and masks need
    not be square.

    Args:
        masks (Tensor[N, Hm, Wm]): soft masks in [0, 1]; float16/bfloat16/bool/uint8 are sampled in float32.
        boxes (Tensor[N, 4] or Boxes): XYXY boxes in image pixels; any object with a ``.tensor`` attribute
            holding the [N, 4] tensor (detectron2's ``Boxes``) is accepted.
        image_shape (tuple[int, int]): (height, width) of the image, positive.
        threshold (float): binarisation threshold; a negative value returns the soft mask instead.

    Returns:
        Tensor[N, height, width]: bool ``soft >= threshold`` when threshold >= 0 (pixels outside the sampled
        range are False, even for threshold 0), otherwise uint8 ``soft * 255`` truncated. Zero masks give
        an empty tensor of that dtype (detectron2 returns uint8 there). On CPU, outputs of 1 MiB or more
        live in a fresh anonymous memory mapping of which only the pages under the boxes are written (the
        rest read as zeros without being faulted in); such a tensor's storage cannot be resized in place.
    """
    check_tensor("masks", masks)
    if not isinstance(boxes, Tensor) and isinstance(getattr(boxes, "tensor", None), Tensor):
        boxes = boxes.tensor
    check_tensor("boxes", boxes)
    if not (masks.dtype.is_floating_point or masks.dtype in (torch.bool, torch.uint8)):
        raise TypeError(f"masks must be a floating (or bool/uint8) tensor, got {masks.dtype}")
    check_floating("boxes", boxes)
    check_shape("masks", masks, (None, None, None), "[N, Hm, Wm]")
    check_shape("boxes", boxes, (None, 4), "[N, 4] (x1, y1, x2, y2)")
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(
            f"boxes must have one box per mask: masks has {masks.shape[0]}, boxes has {boxes.shape[0]}"
        )
    if (masks.shape[1] == 0 or masks.shape[2] == 0) and guard_or_true(masks.shape[0] > 0):
        raise ValueError(f"masks must have non-empty [Hm, Wm], got {list(masks.shape)}")
    check_same_device(masks=masks, boxes=boxes)
    height, width = _image_shape(image_shape)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
    return torch.ops.detcore.paste_masks_in_image(masks, boxes, height, width, float(threshold))


@torch.library.custom_op(
    "detcore::paste_masks_in_image",
    mutates_args=(),
    schema="(Tensor masks, Tensor boxes, SymInt image_height, SymInt image_width, float threshold) -> Tensor",
)
def _paste_masks_op(
    masks: Tensor, boxes: Tensor, image_height: int, image_width: int, threshold: float
) -> Tensor:
    return kernel_for("paste_masks_in_image", masks.device)(
        masks, boxes, image_height, image_width, threshold
    )


@_paste_masks_op.register_fake
def _(masks: Tensor, boxes: Tensor, image_height: int, image_width: int, threshold: float) -> Tensor:
    torch._check(masks.dim() == 3, lambda: "masks must have shape [N, Hm, Wm]")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must have shape [N, 4]")
    torch._check(masks.shape[0] == boxes.shape[0], lambda: "masks and boxes must have the same length")
    dtype = torch.bool if threshold >= 0 else torch.uint8
    return masks.new_empty((masks.shape[0], image_height, image_width), dtype=dtype)


# Outputs at least this large are allocated as a fresh anonymous mapping, which reads as zeros without
# being written: the kernel then writes only the pixels inside the boxes, and the pages between them are
# never faulted in (a pasted 800x1333 image is mostly zeros; zeroing it costs more than the pasting).
_LAZY_ZERO_BYTES = 1 << 20


def _zeroed_bytes(numel: int) -> Tensor | None:
    """A uint8 tensor [numel] that reads as zeros, backed by an anonymous private mapping (None where the
    platform has no such mapping). Pages are not touched here: each is zero-filled by the OS when first
    written, and reads of the others see the shared zero page. The mapping is unmapped with the tensor's
    storage (which is not resizable)."""
    if not hasattr(mmap, "MAP_PRIVATE"):
        return None
    buffer = mmap.mmap(-1, numel, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        # With transparent huge pages a first write would zero-fill 2 MiB around it, most of it zeros.
        buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(buffer, dtype=torch.uint8)


@CPU_KERNELS.register("paste_masks_in_image")
def _paste_masks_cpu(
    masks: Tensor, boxes: Tensor, image_height: int, image_width: int, threshold: float
) -> Tensor:
    n, mask_h, mask_w = masks.shape
    numel = n * image_height * image_width
    flat = _zeroed_bytes(numel) if numel and numel >= _LAZY_ZERO_BYTES else None
    zeroed = flat is not None
    out = (
        flat.view(n, image_height, image_width)
        if zeroed
        else torch.empty((n, image_height, image_width), dtype=torch.uint8)
    )
    if numel:
        m = (
            masks.contiguous()
            if masks.dtype in (torch.float32, torch.float64)
            else masks.float().contiguous()
        )
        b = boxes.contiguous() if boxes.dtype == torch.float64 else boxes.float().contiguous()
        native().paste_masks_in_image(
            m.data_ptr(),
            dtype_code(m),
            b.data_ptr(),
            dtype_code(b),
            n,
            mask_h,
            mask_w,
            image_height,
            image_width,
            threshold,
            out.data_ptr(),
            zeroed,
            num_threads(),
        )
    return out.view(torch.bool) if threshold >= 0 else out
