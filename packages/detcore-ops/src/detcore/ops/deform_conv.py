"""Deformable convolution (DCNv1) and modulated deformable convolution (DCNv2).

``detcore::deform_conv2d`` and ``detcore::_deform_conv2d_backward`` follow ``torchvision.ops.deform_conv2d``:
offset ``[N, 2 * offset_groups * kh * kw, Hout, Wout]`` holds ``(dy, dx)`` pairs per kernel tap (tap
``k = i * kw + j``, offset group outermost), mask ``[N, offset_groups * kh * kw, Hout, Wout]`` scales each
sample, and bilinear sampling reads zero outside the input.

The CPU kernel is im2col + GEMM: the native code fills a column buffer ``[B, C * kh * kw, R * Wout]`` with
masked bilinear samples of ``R`` output rows (parallel over output rows), and torch does the GEMMs on it. The
backward recomputes the columns, forms ``grad_columns = W^T @ grad`` with torch, scatters it into ``grad_input``
in native code (each thread owns whole input planes), computes ``grad_offset`` / ``grad_mask`` per sampling point
in native code, and ``grad_weight = grad @ columns^T`` with torch.

Block size: a block is as many whole images as fit in ``_BLOCK_ELEMENTS`` (2**24) column elements (64 MiB in
float32), or, when one image needs more, tiles of ``max(1, 2**24 // (C * kh * kw * Wout))`` output rows of one
image, so memory stays bounded for large inputs. The forward holds one such buffer, the backward two. Smaller
blocks keep the buffer in cache and need less CPU time on an idle machine, but every block is a few more
torch GEMM calls (OpenMP fork/join) and native thread launches, which cost far more than they save once the
machine is busy (measured: 2 threads, 2x64x100x168 input, block 2**18 was about 5x slower than 2**24 under
load, and 2**20 about 2x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from detcore.ops._checks import check_floating, check_same_device, check_tensor
from detcore.ops._dispatch import CPU_KERNELS, kernel_for
from detcore.ops._native import dtype_code, native, num_threads

__all__ = ["DeformConv", "ModulatedDeformConv", "deform_conv2d"]

_BLOCK_ELEMENTS = 1 << 24


def _int_pair(name: str, value: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _check_4d(name: str, t: Tensor, desc: str) -> None:
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape {desc}, got {list(t.shape)}")


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution v1 (``mask=None``) or v2 (modulated, with ``mask``).

    Same arguments and result as ``torchvision.ops.deform_conv2d``. ``groups`` is ``C_in // weight.shape[1]``
    and ``offset_groups`` is ``offset.shape[1] // (2 * kh * kw)``.

    Args:
        input (Tensor[N, C_in, H, W]): input features; float16/bfloat16 are computed in float32.
        offset (Tensor[N, 2 * offset_groups * kh * kw, Hout, Wout]): (dy, dx) per kernel tap and output location,
            in input pixels.
        weight (Tensor[C_out, C_in // groups, kh, kw]): convolution weights.
        bias (Tensor[C_out], optional): added to every output location.
        stride (int or (int, int)): stride (>= 1).
        padding (int or (int, int)): implicit zero padding (>= 0).
        dilation (int or (int, int)): spacing between kernel taps (>= 1).
        mask (Tensor[N, offset_groups * kh * kw, Hout, Wout], optional): modulation scalar of each sample.

    Returns:
        Tensor[N, C_out, Hout, Wout]: ``Hout = (H + 2 * pad_h - (dil_h * (kh - 1) + 1)) // stride_h + 1``,
        likewise Wout.

    Differentiable (once; no double backward) in input, offset, weight, bias and mask. At sampling points with
    integer coordinates the offset gradient is torchvision's one-sided derivative.
    """
    check_tensor("input", input)
    check_tensor("offset", offset)
    check_tensor("weight", weight)
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        check_floating(name, t)
    _check_4d("input", input, "[N, C_in, H, W]")
    _check_4d("weight", weight, "[C_out, C_in // groups, kh, kw]")
    _check_4d("offset", offset, "[N, 2 * offset_groups * kh * kw, Hout, Wout]")
    tensors = {"input": input, "offset": offset, "weight": weight}
    if bias is not None:
        check_tensor("bias", bias)
        check_floating("bias", bias)
        tensors["bias"] = bias
    if mask is not None:
        check_tensor("mask", mask)
        check_floating("mask", mask)
        _check_4d("mask", mask, "[N, offset_groups * kh * kw, Hout, Wout]")
        tensors["mask"] = mask
    check_same_device(**tensors)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{n} is {t.dtype}" for n, t in tensors.items())
        raise TypeError(f"input, offset, weight, bias and mask must have one dtype, got {listing}")

    stride_h, stride_w = _int_pair("stride", stride, 1)
    pad_h, pad_w = _int_pair("padding", padding, 0)
    dil_h, dil_w = _int_pair("dilation", dilation, 1)

    n, c_in, height, width = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or kh == 0 or kw == 0:
        raise ValueError(f"weight must have non-empty C_in // groups, kh, kw dims, got {list(weight.shape)}")
    if c_in % c_per_group != 0:
        raise ValueError(
            f"weight.shape[1] ({c_per_group}) must divide the input channels ({c_in}): weight must have shape "
            "[C_out, C_in // groups, kh, kw]"
        )
    groups = c_in // c_per_group
    if c_out % groups != 0:
        raise ValueError(f"weight.shape[0] (C_out = {c_out}) must be divisible by groups ({groups})")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * kh * kw) != 0:
        raise ValueError(
            f"offset.shape[1] ({offset.shape[1]}) must be a positive multiple of 2 * kh * kw = {2 * kh * kw}"
        )
    offset_groups = offset.shape[1] // (2 * kh * kw)
    if c_in % offset_groups != 0:
        raise ValueError(
            f"the input channels ({c_in}) must be divisible by offset_groups = offset.shape[1] // (2 * kh * kw) "
            f"= {offset_groups}"
        )
    out_h = (height + 2 * pad_h - (dil_h * (kh - 1) + 1)) // stride_h + 1
    out_w = (width + 2 * pad_w - (dil_w * (kw - 1) + 1)) // stride_w + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"input spatial size {height}x{width} is too small for kernel {kh}x{kw} with padding "
            f"({pad_h}, {pad_w}) and dilation ({dil_h}, {dil_w}): output would be {out_h}x{out_w}"
        )
    expected = [n, 2 * offset_groups * kh * kw, out_h, out_w]
    if list(offset.shape) != expected:
        raise ValueError(
            f"offset must have shape [N, 2 * offset_groups * kh * kw, Hout, Wout] = {expected}, got {list(offset.shape)}"
        )
    if mask is not None:
        expected = [n, offset_groups * kh * kw, out_h, out_w]
        if list(mask.shape) != expected:
            raise ValueError(
                f"mask must have shape [N, offset_groups * kh * kw, Hout, Wout] = {expected}, got {list(mask.shape)}"
            )
    if bias is not None and list(bias.shape) != [c_out]:
        raise ValueError(f"bias must have shape [C_out] = [{c_out}], got {list(bias.shape)}")

    use_mask = mask is not None
    if mask is None:
        mask = input.new_zeros((0,))
    if bias is None:
        bias = input.new_zeros((c_out,))
    return torch.ops.detcore.deform_conv2d(
        input,
        weight,
        offset,
        mask,
        bias,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dil_h,
        dil_w,
        groups,
        offset_groups,
        use_mask,
    )


# ---------------------------------------------------------------------------------------------- custom ops


@torch.library.custom_op("detcore::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor,
    bias: Tensor,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> Tensor:
    return kernel_for("deform_conv2d", input.device)(
        input,
        weight,
        offset,
        mask,
        bias,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups,
        offset_groups,
        use_mask,
    )


@torch.library.custom_op("detcore::_deform_conv2d_backward", mutates_args=())
def _deform_conv2d_backward_op(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    offset: Tensor,
    mask: Tensor,
    bias: Tensor,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return kernel_for("_deform_conv2d_backward", input.device)(
        grad,
        input,
        weight,
        offset,
        mask,
        bias,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
        dilation_h,
        dilation_w,
        groups,
        offset_groups,
        use_mask,
    )


def _out_hw(input: Tensor, weight: Tensor, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int):
    kh, kw = weight.shape[2], weight.shape[3]
    out_h = (input.shape[2] + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (input.shape[3] + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    return out_h, out_w


@_deform_conv2d_op.register_fake
def _(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask):
    torch._check(input.dim() == 4, lambda: f"input must be 4-D, got {input.dim()}-D")
    torch._check(weight.dim() == 4, lambda: f"weight must be 4-D, got {weight.dim()}-D")
    torch._check(offset.dim() == 4, lambda: f"offset must be 4-D, got {offset.dim()}-D")
    out_h, out_w = _out_hw(input, weight, sh, sw, ph, pw, dh, dw)
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


@_deform_conv2d_backward_op.register_fake
def _(grad, input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask):
    return (
        torch.empty_like(input),
        torch.empty_like(weight),
        torch.empty_like(offset),
        torch.empty_like(mask),
        torch.empty_like(bias),
    )


def _setup_context(ctx, inputs, output) -> None:
    input, weight, offset, mask, bias, *params = inputs
    ctx.save_for_backward(input, weight, offset, mask, bias)
    ctx.params = params


def _backward(ctx, grad: Tensor):
    input, weight, offset, mask, bias = ctx.saved_tensors
    grad_input, grad_weight, grad_offset, grad_mask, grad_bias = torch.ops.detcore._deform_conv2d_backward(
        grad, input, weight, offset, mask, bias, *ctx.params
    )
    use_mask = ctx.params[-1]
    return (grad_input, grad_weight, grad_offset, grad_mask if use_mask else None, grad_bias) + (None,) * 9


_deform_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------- CPU kernels


def _compute_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


class _Prepared:
    """Contiguous compute-dtype copies, sizes and the block plan shared by the forward and backward CPU kernels."""

    def __init__(
        self, input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask
    ):
        self.dtype = _compute_dtype(input)
        self.x = input.to(self.dtype).contiguous()
        self.w = weight.to(self.dtype).contiguous()
        self.offset = offset.to(self.dtype).contiguous()
        self.mask = mask.to(self.dtype).contiguous() if use_mask else None
        self.bias = bias.to(self.dtype)
        self.use_mask = use_mask
        self.n, self.c_in, h, w = self.x.shape
        self.c_out, c_g, kh, kw = self.w.shape
        self.groups = groups
        self.out_h, self.out_w = _out_hw(self.x, self.w, sh, sw, ph, pw, dh, dw)
        self.length = self.out_h * self.out_w
        self.k_group = c_g * kh * kw  # GEMM inner size per group
        self.rows = self.c_in * kh * kw  # column-buffer rows per image
        self.geometry_mid = [h, w, self.out_h, self.out_w, kh, kw, sh, sw, ph, pw, dh, dw, offset_groups]
        self.code = dtype_code(self.x)

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """(first image, images, first output row, output rows) of each block; the column buffer of a block holds
        at most _BLOCK_ELEMENTS elements (whole images when they fit, else row tiles of one image, at least one
        output row)."""
        per_row = self.rows * self.out_w
        per_image = per_row * self.out_h
        if per_image <= _BLOCK_ELEMENTS:
            nb = max(1, min(self.n, _BLOCK_ELEMENTS // max(per_image, 1)))
            return [(n0, min(nb, self.n - n0), 0, self.out_h) for n0 in range(0, self.n, nb)]
        tile = max(1, _BLOCK_ELEMENTS // per_row)
        return [
            (n0, 1, h0, min(tile, self.out_h - h0))
            for n0 in range(self.n)
            for h0 in range(0, self.out_h, tile)
        ]

    def columns(self) -> Tensor:
        size = max(nb * nr for _, nb, _, nr in self.blocks())
        return torch.empty((size * self.rows * self.out_w,), dtype=self.dtype)

    def geometry(self, nb: int, h0: int, nr: int) -> list[int]:
        return [nb, self.c_in, *self.geometry_mid, h0, nr]

    def weight_groups(self) -> Tensor:
        return self.w.view(self.groups, self.c_out // self.groups, self.k_group)

    def mask_ptr(self, n0: int) -> int:
        return self.mask[n0].data_ptr() if self.mask is not None else 0

    def im2col(self, n0: int, nb: int, h0: int, nr: int, columns: Tensor) -> None:
        native().deform_conv_im2col(
            self.x[n0].data_ptr(),
            self.offset[n0].data_ptr(),
            self.mask_ptr(n0),
            columns.data_ptr(),
            self.geometry(nb, h0, nr),
            self.use_mask,
            self.code,
            num_threads(),
        )


@CPU_KERNELS.register("deform_conv2d")
def _deform_conv2d_cpu(
    input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask
):
    p = _Prepared(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask)
    out = torch.empty((p.n, p.c_out, p.out_h, p.out_w), dtype=p.dtype)
    if p.n > 0 and p.length > 0:
        wg = p.weight_groups()
        bias_g = p.bias.view(p.groups, p.c_out // p.groups, 1)
        buffer = p.columns()
        out_g = out.view(p.n, p.groups, p.c_out // p.groups, p.length)
        for n0, nb, h0, nr in p.blocks():
            tile = nr * p.out_w
            cols = buffer[: nb * p.rows * tile].view(nb, p.groups, p.k_group, tile)
            p.im2col(n0, nb, h0, nr, cols)
            for i in range(nb):
                # bias + [g, C_out/g, K] @ [g, K, tile] -> written in place into out[n0 + i] (rows h0 .. h0 + nr)
                target = out_g[n0 + i, :, :, h0 * p.out_w : h0 * p.out_w + tile]
                torch.baddbmm(bias_g, wg, cols[i], out=target)
    return out.to(input.dtype)


@CPU_KERNELS.register("_deform_conv2d_backward")
def _deform_conv2d_backward_cpu(
    grad, input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask
):
    p = _Prepared(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw, groups, offset_groups, use_mask)
    grad = grad.to(p.dtype).contiguous()
    grad_input = torch.zeros_like(p.x)
    # Every element of grad_offset / grad_mask is written by the native kernel (all blocks cover all rows).
    grad_offset = torch.empty_like(p.offset)
    grad_mask = torch.empty_like(p.mask) if use_mask else None
    grad_weight = torch.zeros((p.groups, p.c_out // p.groups, p.k_group), dtype=p.dtype)
    grad_bias = grad.sum(dim=(0, 2, 3))
    if p.n > 0 and p.length > 0:
        wg_t = p.weight_groups().transpose(1, 2)
        buffer, grad_buffer = p.columns(), p.columns()
        grad_g = grad.view(p.n, p.groups, p.c_out // p.groups, p.length)
        lib, threads = native(), num_threads()
        for n0, nb, h0, nr in p.blocks():
            tile = nr * p.out_w
            cols = buffer[: nb * p.rows * tile].view(nb, p.groups, p.k_group, tile)
            gcols = grad_buffer[: nb * p.rows * tile].view(nb, p.groups, p.k_group, tile)
            p.im2col(n0, nb, h0, nr, cols)
            for i in range(nb):
                grad_tile = grad_g[n0 + i, :, :, h0 * p.out_w : h0 * p.out_w + tile]
                torch.bmm(wg_t, grad_tile, out=gcols[i])  # [g, K, C_out/g] @ [g, C_out/g, tile]
                grad_weight.baddbmm_(grad_tile, cols[i].transpose(1, 2))  # [g, C_out/g, tile] @ [g, tile, K]
            geometry = p.geometry(nb, h0, nr)
            lib.deform_conv_col2im(
                gcols.data_ptr(),
                p.offset[n0].data_ptr(),
                p.mask_ptr(n0),
                grad_input[n0].data_ptr(),
                geometry,
                use_mask,
                p.code,
                threads,
            )
            lib.deform_conv_grad_offset_mask(
                gcols.data_ptr(),
                p.x[n0].data_ptr(),
                p.offset[n0].data_ptr(),
                p.mask_ptr(n0),
                grad_offset[n0].data_ptr(),
                grad_mask[n0].data_ptr() if grad_mask is not None else 0,
                geometry,
                use_mask,
                p.code,
                threads,
            )
    if grad_mask is None:
        grad_mask = torch.zeros_like(mask)
    return (
        grad_input.to(input.dtype),
        grad_weight.view(weight.shape).to(weight.dtype),
        grad_offset.to(offset.dtype),
        grad_mask.to(mask.dtype),
        grad_bias.to(bias.dtype),
    )


# ---------------------------------------------------------------------------------------------- modules


class DeformConv(nn.Module):
    """Deformable convolution (DCNv1), detectron2's ``DeformConv``.

    ``forward(x, offset)`` with ``x`` ``Tensor[N, in_channels, H, W]`` and ``offset``
    ``Tensor[N, 2 * deformable_groups * kh * kw, Hout, Wout]`` returns ``Tensor[N, out_channels, Hout, Wout]``,
    then applies ``norm`` and ``activation`` (in that order). An empty input returns an empty output of the
    right shape without running ``norm``/``activation``.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int or (int, int)): kernel size.
        stride, padding, dilation (int or (int, int)): as in ``nn.Conv2d``.
        groups (int): convolution groups.
        deformable_groups (int): offset groups (each has its own offsets).
        bias (bool): add a learnable bias (detectron2 only supports False; True is a detcore extension).
        norm (nn.Module, optional): normalization layer applied to the output.
        activation (callable, optional): activation applied after ``norm``.
    """

    _with_mask = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
            ("deformable_groups", deformable_groups),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
        if in_channels % deformable_groups != 0:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups ({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _int_pair("kernel_size", kernel_size, 1)
        self.stride = _int_pair("stride", stride, 1)
        self.padding = _int_pair("padding", padding, 0)
        self.dilation = _int_pair("dilation", dilation, 1)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bool(bias)
        self.norm = norm
        self.activation = activation

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if self.with_bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.constant_(self.bias, 0)

    def _conv(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
        if x.numel() == 0:
            return out
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        return self._conv(x, offset, None)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, deformable_groups={self.deformable_groups}, "
            f"bias={self.with_bias}"
        )


class ModulatedDeformConv(DeformConv):
    """Modulated deformable convolution (DCNv2), detectron2's ``ModulatedDeformConv``.

    Same arguments as :class:`DeformConv` except ``bias`` defaults to True. ``forward(x, offset, mask)`` takes
    ``mask`` ``Tensor[N, deformable_groups * kh * kw, Hout, Wout]`` (usually a sigmoid output).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            deformable_groups=deformable_groups,
            bias=bias,
            norm=norm,
            activation=activation,
        )

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        check_tensor("mask", mask)
        return self._conv(x, offset, mask)
