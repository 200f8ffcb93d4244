"""ROIAlign with torchvision's and detectron2's semantics: ``detcore::roi_align`` and its backward.

The CPU kernel computes the bilinear sample positions and weights of a roi once, merges the samples of
each output bin into per-pixel weights, and evaluates them over a channels-last copy of the pixels the roi
touches, in parallel over rois (backward: over channel blocks). See csrc/roi_align/roi_engine.h.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detcore.ops._checks import check_floating, check_same_device, check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads

__all__ = ["ROIAlign", "roi_align"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; raises naming ``output_size``."""
    if _is_int(output_size):
        size = (output_size, output_size)
    elif isinstance(output_size, Sequence) and len(output_size) == 2 and all(_is_int(s) for s in output_size):
        size = (output_size[0], output_size[1])
    else:
        raise TypeError(f"output_size must be an int or a pair of ints (height, width), got {output_size!r}")
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"output_size must be positive, got {size}")
    return int(size[0]), int(size[1])


def _check_scale(spatial_scale: float) -> float:
    if not isinstance(spatial_scale, (int, float)) or isinstance(spatial_scale, bool):
        raise TypeError(f"spatial_scale must be a float, got {type(spatial_scale).__name__}")
    if not (0 < spatial_scale < float("inf")):
        raise ValueError(f"spatial_scale must be a positive finite float, got {spatial_scale}")
    return float(spatial_scale)


def _check_sampling_ratio(sampling_ratio: int) -> int:
    if not _is_int(sampling_ratio):
        raise TypeError(f"sampling_ratio must be an int (<= 0: adaptive), got {sampling_ratio!r}")
    return int(sampling_ratio)


def _check_input(input: Tensor) -> None:
    check_tensor("input", input)
    check_floating("input", input)
    if input.dim() != 4:
        raise ValueError(f"input must have shape [N, C, H, W], got {list(input.shape)}")


def _as_rois(boxes: Tensor | Sequence[Tensor], input: Tensor, box_dim: int, desc: str) -> Tensor:
    """``[K, 1 + box_dim]`` rois (batch index first) from rois or a list of per-image ``[Ki, box_dim]`` boxes."""
    if isinstance(boxes, Tensor):
        check_floating("rois", boxes)
        check_shape("rois", boxes, (None, box_dim + 1), f"[K, {box_dim + 1}] (batch_index, {desc})")
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        parts, index = [], []
        for i, b in enumerate(boxes):
            check_tensor(f"boxes[{i}]", b)
            check_floating(f"boxes[{i}]", b)
            check_shape(f"boxes[{i}]", b, (None, box_dim), f"[K{i}, {box_dim}] ({desc})")
            parts.append(b)
            index.append(torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device))
        if not parts:
            return input.new_zeros((0, box_dim + 1))
        rois = torch.cat([torch.cat(index), torch.cat(parts)], dim=1)
    else:
        raise TypeError(
            f"rois must be a Tensor[K, {box_dim + 1}] or a list of Tensor[Ki, {box_dim}], got {type(boxes).__name__}"
        )
    if rois.dtype != input.dtype:
        raise TypeError(f"rois must have the same dtype as input ({input.dtype}), got {rois.dtype}")
    check_same_device(input=input, rois=rois)
    return rois


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Region of Interest Align (Mask R-CNN), exactly as ``torchvision.ops.roi_align``.

    Each roi is divided into ``output_size`` bins; a bin's value is the average of bilinear samples on a
    regular grid inside it (``sampling_ratio`` per axis, or ``ceil(roi_size / output_size)`` when
    ``sampling_ratio <= 0``). Samples further than one pixel outside the map are zero.

    Args:
        input (Tensor[N, C, H, W]): feature map; float16/bfloat16 are computed in float32.
        boxes (Tensor[K, 5] or list[Tensor[Ki, 4]]): rois ``(batch_index, x1, y1, x2, y2)`` in image
            coordinates, or one XYXY tensor per image (the batch index is its position in the list). Same
            dtype and device as ``input``; batch indices must be in ``[0, N)``.
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates (1 / stride).
        sampling_ratio (int): samples per bin along each axis; ``<= 0`` for the adaptive count.
        aligned (bool): shift the box by -0.5 pixel (detectron2's ``ROIAlignV2``); when False, rois are
            forced to be at least 1x1 (the legacy Detectron behaviour).

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: pooled features, dtype of ``input``.
    """
    _check_input(input)
    ph, pw = _output_size(output_size)
    scale = _check_scale(spatial_scale)
    ratio = _check_sampling_ratio(sampling_ratio)
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__}")
    rois = _as_rois(boxes, input, 4, "x1, y1, x2, y2")
    return torch.ops.detcore.roi_align(input, rois, scale, ph, pw, ratio, aligned)


class ROIAlign(nn.Module):
    """:func:`roi_align` as a module, with detectron2's ``ROIAlign`` arguments.

    Args:
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates.
        sampling_ratio (int): samples per bin along each axis; 0 for the adaptive count.
        aligned (bool): shift boxes by -0.5 pixel before sampling (see :func:`roi_align`).
    """

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        _output_size(output_size)
        _check_scale(spatial_scale)
        _check_sampling_ratio(sampling_ratio)
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        """Pool ``rois`` (Tensor[K, 5]: batch_index, x1, y1, x2, y2) from ``input`` (Tensor[N, C, H, W]).

        The rois are cast to the dtype of ``input`` (as detectron2 does), so float32 boxes pool float16 maps.
        """
        _check_input(input)
        check_tensor("rois", rois)
        check_shape("rois", rois, (None, 5), "[K, 5] (batch_index, x1, y1, x2, y2)")
        return roi_align(
            input,
            rois.to(dtype=input.dtype),
            self.output_size,
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# ---------------------------------------------------------------------------------------------------------
# Custom ops


@torch.library.custom_op("detcore::roi_align", mutates_args=())
def _roi_align_op(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    return kernel_for("roi_align", input.device)(
        input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    )


@_roi_align_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"input must be 4-D [N, C, H, W], got {input.dim()}-D")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must have shape [K, 5]")
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.custom_op("detcore::_roi_align_backward", mutates_args=())
def _roi_align_backward_op(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    return kernel_for("_roi_align_backward", grad.device)(
        grad,
        rois,
        spatial_scale,
        pooled_height,
        pooled_width,
        batch_size,
        channels,
        height,
        width,
        sampling_ratio,
        aligned,
    )


@_roi_align_backward_op.register_fake
def _(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    batch_size,
    channels,
    height,
    width,
    sampling_ratio,
    aligned,
):
    torch._check(grad.dim() == 4, lambda: f"grad must be 4-D [K, C, PH, PW], got {grad.dim()}-D")
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    ctx.input_shape = tuple(input.shape)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, ratio, aligned = ctx.params
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.detcore._roi_align_backward(
        grad, rois, spatial_scale, ph, pw, n, c, h, w, ratio, aligned
    )
    return grad_input, None, None, None, None, None, None


_roi_align_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_context_bw(ctx, inputs, output):
    rois = inputs[1]
    ctx.save_for_backward(rois)
    ctx.params = (inputs[2], inputs[3], inputs[4], inputs[9], inputs[10])


def _backward_bw(ctx, grad_grad_input):
    # The backward is linear in grad; its adjoint is the forward.
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, ratio, aligned = ctx.params
    grad_grad = torch.ops.detcore.roi_align(grad_grad_input, rois, spatial_scale, ph, pw, ratio, aligned)
    return (grad_grad,) + (None,) * 10


_roi_align_backward_op.register_autograd(_backward_bw, setup_context=_setup_context_bw)


# ---------------------------------------------------------------------------------------------------------
# CPU kernels


def compute_dtype(t: Tensor) -> torch.dtype:
    """float32/float64 stay; float16 and bfloat16 are computed in float32."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def check_grad_shape(grad: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(grad.shape) != shape:
        raise ValueError(
            f"grad must have shape {list(shape)} (one entry per output element), got {list(grad.shape)}"
        )


def nchw_or_nhwc(x: Tensor) -> tuple[Tensor, bool]:
    """``x`` as contiguous NCHW memory, or as it is when it already is channels-last (then True)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


@CPU_KERNELS.register("roi_align")
def _roi_align_cpu(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    dtype = compute_dtype(input)
    x, channels_last = nchw_or_nhwc(input.to(dtype))
    r = rois.to(dtype).contiguous()
    n, c, h, w = x.shape
    k = r.shape[0]
    out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype)
    if k > 0:
        native().roi_align_forward(
            x.data_ptr(), channels_last, r.data_ptr(), k, n, c, h, w, pooled_height, pooled_width,
            float(spatial_scale), int(sampling_ratio), bool(aligned), dtype_code(x), out.data_ptr(), num_threads(),
        )  # fmt: skip
    return out.to(input.dtype)


@CPU_KERNELS.register("_roi_align_backward")
def _roi_align_backward_cpu(
    grad,
    rois,
    spatial_scale,
    pooled_height,
    pooled_width,
    batch_size,
    channels,
    height,
    width,
    sampling_ratio,
    aligned,
):
    dtype = compute_dtype(grad)
    g = grad.to(dtype).contiguous()
    r = rois.to(dtype).contiguous()
    k = r.shape[0]
    check_grad_shape(g, (k, channels, pooled_height, pooled_width))
    grad_input = torch.empty((batch_size, channels, height, width), dtype=dtype)  # fully written
    if k == 0:
        grad_input.zero_()
    else:
        native().roi_align_backward(
            g.data_ptr(), r.data_ptr(), k, batch_size, channels, height, width, pooled_height, pooled_width,
            float(spatial_scale), int(sampling_ratio), bool(aligned), dtype_code(g), grad_input.data_ptr(),
            num_threads(),
        )  # fmt: skip
    return grad_input.to(grad.dtype)
