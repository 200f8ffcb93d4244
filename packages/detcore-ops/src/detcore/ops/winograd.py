"""3x3 convolution by Winograd's minimal filtering F(4x4, 3x3): ``detcore::conv3x3_winograd`` (CPU, float32).

A 3x3, stride-1, padding-1 convolution computed per 4x4 output tile as ``A^T [(G w G^T) * (B^T d B)] A``
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; interpolation points 0, +-1,
+-2, inf). The elementwise product over the 36 positions of a 6x6 tile, summed over input channels, is 36
matrix products ``[tiles, C_in] @ [C_in, C_out]``: 4x fewer multiplications than the direct convolution
(36 instead of 144 per tile, input and output channel pair). The input and output transforms are detcore's
native kernels; the 36 products are ``torch.bmm`` (MKL / oneDNN). Tiles are processed in chunks whose
transformed inputs fit in the last-level cache.

Numerics: float32 throughout, with transformed weights computed in float64 and rounded once. The
rounding error is larger than the direct convolution's (the transforms multiply values by up to 8 and
sum 36 terms): measured about 6e-6 of the output's magnitude for 256 input channels versus 1.5e-6 for
oneDNN's direct convolution; it is an inference optimisation (``detcore.archs.optimize_for_inference``), not
a training op (no autograd).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops._checks import check_tensor
from detcore.ops._native import native, num_threads

__all__ = ["conv3x3_winograd", "winograd_weight"]

# F(4x4, 3x3) transform matrices.
_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)

# Transformed inputs of one chunk of tiles take at most this many bytes (fits the last-level cache together
# with the chunk's products; measured on a 32 MiB-L3 CPU, chunks of 256-1024 tiles of 256 channels).
_CHUNK_BYTES = 16 << 20


def winograd_weight(weight: Tensor) -> Tensor:
    """Transformed filters ``U = G w G^T`` for :func:`conv3x3_winograd`.

    Args:
        weight (Tensor[C_out, C_in, 3, 3]): float32 convolution weight.

    Returns:
        Tensor[36, C_in, C_out]: float32, contiguous; row ``p = 6 * a + b`` is tile position ``(a, b)``.
    """
    check_tensor("weight", weight)
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"weight must have shape [C_out, C_in, 3, 3], got {tuple(weight.shape)}")
    if weight.dtype != torch.float32:
        raise TypeError(f"weight must be float32, got {weight.dtype}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ay,oiyx,bx->aboi", g, weight.detach().double(), g)  # [6, 6, C_out, C_in]
    return u.reshape(36, weight.shape[0], weight.shape[1]).transpose(1, 2).float().contiguous()


def conv3x3_winograd(x: Tensor, u: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """``relu?(conv2d(x, w, bias, stride=1, padding=1))`` with ``u = winograd_weight(w)``.

    Args:
        x (Tensor[N, C_in, H, W]): float32 CPU feature map (any memory format; computed channels-last).
        u (Tensor[36, C_in, C_out]): transformed weight from :func:`winograd_weight`.
        bias (Tensor[C_out] | None): float32 bias.
        relu (bool): apply ReLU to the result.

    Returns:
        Tensor[N, C_out, H, W]: float32 in ``torch.channels_last`` memory format. Not differentiable.
    """
    check_tensor("x", x)
    check_tensor("u", u)
    if x.dim() != 4:
        raise ValueError(f"x must have shape [N, C_in, H, W], got {tuple(x.shape)}")
    if u.dim() != 3 or u.shape[0] != 36 or u.shape[1] != x.shape[1]:
        raise ValueError(
            f"u must have shape [36, C_in={x.shape[1]}, C_out] (from winograd_weight), got {tuple(u.shape)}"
        )
    if bias is not None:
        check_tensor("bias", bias)
        if bias.shape != (u.shape[2],):
            raise ValueError(f"bias must have shape [C_out={u.shape[2]}], got {tuple(bias.shape)}")
    for name, t in (("x", x), ("u", u), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}")
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU (conv3x3_winograd is a CPU kernel), got {t.device}")
    return torch.ops.detcore.conv3x3_winograd(x, u, bias, relu)


@torch.library.custom_op("detcore::conv3x3_winograd", mutates_args=(), device_types="cpu")
def _conv3x3_winograd_op(x: Tensor, u: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    n, c, h, w = x.shape
    co = u.shape[2]
    y = torch.empty((n, co, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    tiles = n * ((h + 3) // 4) * ((w + 3) // 4)
    if tiles == 0 or co == 0:
        return y
    if c == 0:  # no input channels: the bias alone
        y.zero_()
        if bias is not None:
            y += bias.view(1, co, 1, 1)
        return y.relu_() if relu else y
    xc = x.contiguous(memory_format=torch.channels_last)
    uc = u.contiguous()
    b = bias.contiguous() if bias is not None else None
    chunk = max(1, min(tiles, _CHUNK_BYTES // (36 * 4 * max(c, co))))
    v = torch.empty((36, chunk, c), dtype=torch.float32)
    m = torch.empty((36, chunk, co), dtype=torch.float32)
    threads = num_threads()
    lib = native()
    for t0 in range(0, tiles, chunk):
        t1 = min(tiles, t0 + chunk)
        k = t1 - t0
        vk = v.view(-1)[: 36 * k * c].view(36, k, c)  # contiguous [36, k, c]: rows of the native layout
        mk = m.view(-1)[: 36 * k * co].view(36, k, co)
        lib.winograd_f43_input(xc.data_ptr(), n, h, w, c, t0, t1, vk.data_ptr(), threads)
        torch.bmm(vk, uc, out=mk)
        lib.winograd_f43_output(
            mk.data_ptr(),
            n,
            h,
            w,
            co,
            t0,
            t1,
            b.data_ptr() if b is not None else 0,
            relu,
            y.data_ptr(),
            threads,
        )
    return y


@_conv3x3_winograd_op.register_fake
def _(x: Tensor, u: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    n, _, h, w = x.shape
    return x.new_empty((n, u.shape[2], h, w)).contiguous(memory_format=torch.channels_last)
