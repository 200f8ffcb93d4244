"""ROIPool with torchvision's semantics: ``detcore::roi_pool`` (output and argmax) and its backward."""

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
    _check_scale,
    _output_size,
    check_grad_shape,
    compute_dtype,
)

__all__ = ["ROIPool", "roi_pool"]


def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Region of Interest max pooling (Fast R-CNN), exactly as ``torchvision.ops.roi_pool``.

    Box corners are scaled and rounded to pixels, rois smaller than one pixel are forced to 1x1, and each of
    the ``output_size`` bins takes the maximum over the pixels it covers (0 for a bin outside the map).

    Args:
        input (Tensor[N, C, H, W]): feature map; float16/bfloat16 are computed in float32.
        boxes (Tensor[K, 5] or list[Tensor[Ki, 4]]): rois ``(batch_index, x1, y1, x2, y2)`` or one XYXY tensor
            per image; same dtype and device as ``input``; batch indices in ``[0, N)``.
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]: pooled features. Gradients flow to the max pixel.
    """
    _check_input(input)
    ph, pw = _output_size(output_size)
    scale = _check_scale(spatial_scale)
    rois = _as_rois(boxes, input, 4, "x1, y1, x2, y2")
    output, _ = torch.ops.detcore.roi_pool(input, rois, scale, ph, pw)
    return output


class ROIPool(nn.Module):
    """:func:`roi_pool` as a module.

    Args:
        output_size (int or (int, int)): pooled ``(height, width)``.
        spatial_scale (float): factor mapping box coordinates to input coordinates.
    """

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        _output_size(output_size)
        _check_scale(spatial_scale)
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        """Pool ``rois`` (Tensor[K, 5] or list[Tensor[Ki, 4]]) from ``input`` (Tensor[N, C, H, W])."""
        _check_input(input)
        if isinstance(rois, Tensor):
            check_tensor("rois", rois)
            check_shape("rois", rois, (None, 5), "[K, 5] (batch_index, x1, y1, x2, y2)")
            rois = rois.to(dtype=input.dtype)
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


@torch.library.custom_op("detcore::roi_pool", mutates_args=())
def _roi_pool_op(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int
) -> tuple[Tensor, Tensor]:
    return kernel_for("roi_pool", input.device)(input, rois, spatial_scale, pooled_height, pooled_width)


@_roi_pool_op.register_fake
def _(input, rois, spatial_scale, pooled_height, pooled_width):
    torch._check(input.dim() == 4, lambda: f"input must be 4-D [N, C, H, W], got {input.dim()}-D")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must have shape [K, 5]")
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@torch.library.custom_op("detcore::_roi_pool_backward", mutates_args=())
def _roi_pool_backward_op(
    grad: Tensor,
    rois: Tensor,
    argmax: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
) -> Tensor:
    return kernel_for("_roi_pool_backward", grad.device)(
        grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width
    )


@_roi_pool_backward_op.register_fake
def _(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width):
    torch._check(grad.dim() == 4, lambda: f"grad must be 4-D [K, C, PH, PW], got {grad.dim()}-D")
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    _, argmax = output
    ctx.save_for_backward(rois, argmax)
    ctx.params = (spatial_scale, pooled_height, pooled_width)
    ctx.input_shape = tuple(input.shape)
    ctx.mark_non_differentiable(argmax)


def _backward(ctx, grad, grad_argmax):
    rois, argmax = ctx.saved_tensors
    spatial_scale, ph, pw = ctx.params
    n, c, h, w = ctx.input_shape
    grad_input = torch.ops.detcore._roi_pool_backward(grad, rois, argmax, spatial_scale, ph, pw, n, c, h, w)
    return grad_input, None, None, None, None


_roi_pool_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_context_bw(ctx, inputs, output):
    ctx.save_for_backward(inputs[1], inputs[2])  # rois, argmax


def _backward_bw(ctx, grad_grad_input):
    # The backward scatters grad to argmax; its adjoint gathers from there (0 where argmax is -1).
    rois, argmax = ctx.saved_tensors
    n = grad_grad_input.shape[0]
    batch = rois[:, 0].to(torch.int64).clamp(0, max(n - 1, 0))
    planes = grad_grad_input.flatten(2)[batch]  # [K, C, H * W]
    index = argmax.flatten(2).clamp(min=0)
    gathered = planes.gather(2, index).view(argmax.shape)
    grad_grad = torch.where(argmax >= 0, gathered, torch.zeros_like(gathered))
    return (grad_grad,) + (None,) * 9


_roi_pool_backward_op.register_autograd(_backward_bw, setup_context=_setup_context_bw)


@CPU_KERNELS.register("roi_pool")
def _roi_pool_cpu(input, rois, spatial_scale, pooled_height, pooled_width):
    dtype = compute_dtype(input)
    x = input.to(dtype).contiguous()
    r = rois.to(dtype).contiguous()
    n, c, h, w = x.shape
    k = r.shape[0]
    out = torch.empty((k, c, pooled_height, pooled_width), dtype=dtype)
    argmax = torch.empty((k, c, pooled_height, pooled_width), dtype=torch.int64)
    if k > 0:
        native().roi_pool_forward(
            x.data_ptr(), r.data_ptr(), k, n, c, h, w, pooled_height, pooled_width, float(spatial_scale),
            dtype_code(x), out.data_ptr(), argmax.data_ptr(), num_threads(),
        )  # fmt: skip
    return out.to(input.dtype), argmax


@CPU_KERNELS.register("_roi_pool_backward")
def _roi_pool_backward_cpu(
    grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width
):
    dtype = compute_dtype(grad)
    g = grad.to(dtype).contiguous()
    r = rois.to(dtype).contiguous()
    k = r.shape[0]
    check_grad_shape(g, (k, channels, pooled_height, pooled_width))
    check_grad_shape(argmax, (k, channels, pooled_height, pooled_width))
    a = argmax.to(torch.int64).contiguous()
    grad_input = torch.zeros((batch_size, channels, height, width), dtype=dtype)
    if k > 0:
        native().roi_pool_backward(
            g.data_ptr(), r.data_ptr(), a.data_ptr(), k, batch_size, channels, height, width, pooled_height,
            pooled_width, dtype_code(g), grad_input.data_ptr(), num_threads(),
        )  # fmt: skip
    return grad_input.to(grad.dtype)
