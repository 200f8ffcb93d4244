"""ROIAlignRotated with detectron2's semantics: ``detcore::roi_align_rotated`` and its backward."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detcore.ops._checks import check_shape, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads
from detcore.ops.roi_align import (
    _as_rois,
    _check_input,
    _check_sampling_ratio,
    _check_scale,
    _output_size,
    check_grad_shape,
    compute_dtype,
    nchw_or_nhwc,
)

__all__ = ["ROIAlignRotated", "roi_align_rotated"]

_DESC = "cx, cy, w, h, angle_degrees"


def roi_align_rotated(
    input: Tensor,
    rois: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
) -> Tensor:
    """ROIAlign over rotated boxes, as detectron2's ``roi_align_rotated``.

    The sampling grid of the axis-aligned ``w x h`` box is rotated counter-clockwise by the angle about the
    box centre. Coordinates are continuous (the -0.5 pixel shift of ``aligned=True`` always applies) and
    rois are not enlarged: a zero-size roi with adaptive sampling pools to 0. Samples further than one
    pixel outside the map are zero.

    Args:
        input (Tensor[N, C, H, W]): feature map; float16/bfloat16 are computed in float32.
        rois (Tensor[K, 6] or list[Tensor[Ki, 5]]): ``(batch_index, cx, cy, w, h, angle_degrees)`` in image
            coordinates, or one ``(cx, cy, w, h, angle)`` tensor per image. Same dtype and device as
            ``input``; ``w, h >= 0``; batch indices in ``[0, N)``.
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates.
        sampling_ratio (int): samples per bin along each axis; ``<= 0`` for ``ceil(roi_size / output_size)``.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: pooled features, dtype of ``input``.
    """
    _check_input(input)
    ph, pw = _output_size(output_size)
    scale = _check_scale(spatial_scale)
    ratio = _check_sampling_ratio(sampling_ratio)
    r = _as_rois(rois, input, 5, _DESC)
    return torch.ops.detcore.roi_align_rotated(input, r, scale, ph, pw, ratio)


class ROIAlignRotated(nn.Module):
    """:func:`roi_align_rotated` as a module, with detectron2's ``ROIAlignRotated`` arguments.

    Args:
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates.
        sampling_ratio (int): samples per bin along each axis; 0 for the adaptive count.
    """

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float, sampling_ratio: int) -> None:
        super().__init__()
        _output_size(output_size)
        _check_scale(spatial_scale)
        _check_sampling_ratio(sampling_ratio)
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        """Pool ``rois`` (Tensor[K, 6]: batch_index, cx, cy, w, h, angle_degrees) from ``input`` [N, C, H, W].

        The rois are cast to the dtype of ``input`` (as detectron2 does).
        """
        _check_input(input)
        check_tensor("rois", rois)
        check_shape("rois", rois, (None, 6), f"[K, 6] (batch_index, {_DESC})")
        return roi_align_rotated(
            input, rois.to(dtype=input.dtype), self.output_size, self.spatial_scale, self.sampling_ratio
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}"
        )


@torch.library.custom_op("detcore::roi_align_rotated", mutates_args=())
def _roi_align_rotated_op(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> Tensor:
    return kernel_for("roi_align_rotated", input.device)(
        input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio
    )


@_roi_align_rotated_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    torch._check(input.dim() == 4, lambda: f"input must be 4-D [N, C, H, W], got {input.dim()}-D")
    torch._check(rois.dim() == 2 and rois.shape[1] == 6, lambda: "rois must have shape [K, 6]")
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.custom_op("detcore::_roi_align_rotated_backward", mutates_args=())
def _roi_align_rotated_backward_op(
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
) -> Tensor:
    return kernel_for("_roi_align_rotated_backward", grad.device)(
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
    )


@_roi_align_rotated_backward_op.register_fake
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
):
    torch._check(grad.dim() == 4, lambda: f"grad must be 4-D [K, C, PH, PW], got {grad.dim()}-D")
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio = inputs
    ctx.save_for_backward(rois)
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio)
    ctx.input_shape = tuple(input.shape)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, ratio = ctx.params
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.detcore._roi_align_rotated_backward(
        grad, rois, spatial_scale, ph, pw, n, c, h, w, ratio
    )
    return grad_input, None, None, None, None, None


_roi_align_rotated_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_context_bw(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.params = (inputs[2], inputs[3], inputs[4], inputs[9])


def _backward_bw(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, ratio = ctx.params
    grad_grad = torch.ops.detcore.roi_align_rotated(grad_grad_input, rois, spatial_scale, ph, pw, ratio)
    return (grad_grad,) + (None,) * 9


_roi_align_rotated_backward_op.register_autograd(_backward_bw, setup_context=_setup_context_bw)


@CPU_KERNELS.register("roi_align_rotated")
def _roi_align_rotated_cpu(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    dtype = compute_dtype(input)
    x, channels_last = nchw_or_nhwc(input.to(dtype))
    r = rois.to(dtype).contiguous()
    n, c, h, w = x.shape
    k = r.shape[0]
    out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype)
    if k > 0:
        native().roi_align_rotated_forward(
            x.data_ptr(), channels_last, r.data_ptr(), k, n, c, h, w, pooled_height, pooled_width,
            float(spatial_scale), int(sampling_ratio), dtype_code(x), out.data_ptr(), num_threads(),
        )  # fmt: skip
    return out.to(input.dtype)


@CPU_KERNELS.register("_roi_align_rotated_backward")
def _roi_align_rotated_backward_cpu(
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
        native().roi_align_rotated_backward(
            g.data_ptr(), r.data_ptr(), k, batch_size, channels, height, width, pooled_height, pooled_width,
            float(spatial_scale), int(sampling_ratio), dtype_code(g), grad_input.data_ptr(), num_threads(),
        )  # fmt: skip
    return grad_input.to(grad.dtype)
