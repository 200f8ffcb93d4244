"""detcore.ops.conv3x3_winograd (Winograd F(4x4, 3x3)) against a float64 conv2d reference, the tile and
chunk edge cases, the weight transform against its definition, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import detcore.ops.winograd as winograd_module
from detcore.ops import conv3x3_winograd, winograd_weight

# Relative error bound (of the output's largest magnitude): F(4x4, 3x3) in float32 measured ~7e-6 with 256
# input channels, oneDNN's direct convolution ~1.6e-6.
RTOL = 3e-5


def _case(n, c, co, h, w, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(co, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
    b = torch.randn(co, generator=g) if bias else None
    return x, weight, b


def _reference(x, weight, bias, relu):
    y = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    return y.relu() if relu else y


def _assert_close(got, ref):
    scale = ref.abs().max().item()
    err = (got.double() - ref).abs().max().item()
    assert err <= RTOL * max(scale, 1e-6), f"max error {err:.3g} at output scale {scale:.3g}"


@pytest.mark.parametrize(
    "n,c,co,h,w",
    [
        (1, 5, 3, 7, 9),  # channels below the vector width, H/W not multiples of 4
        (2, 40, 33, 13, 10),  # batch, channel counts not multiples of the 32-channel block
        (1, 8, 8, 1, 1),  # one pixel: a single tile, all but one tap in the padding
        (1, 64, 16, 4, 4),  # exactly one tile
        (3, 17, 70, 6, 21),
        (1, 256, 64, 20, 28),
    ],
)
@pytest.mark.parametrize("relu", [False, True])
def test_matches_float64_conv2d(n, c, co, h, w, relu):
    x, weight, bias = _case(n, c, co, h, w, seed=n * 1000 + c + h)
    got = conv3x3_winograd(x, winograd_weight(weight), bias, relu)
    assert got.shape == (n, co, h, w) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    _assert_close(got, _reference(x, weight, bias, relu))
    if relu:
        assert (got >= 0).all()


def test_no_bias_and_any_input_layout():
    x, weight, _ = _case(2, 24, 12, 11, 9, seed=3)
    u = winograd_weight(weight)
    ref = _reference(x, weight, None, False)
    a = conv3x3_winograd(x, u)  # NCHW-contiguous input
    b = conv3x3_winograd(x.contiguous(memory_format=torch.channels_last), u)
    _assert_close(a, ref)
    assert torch.equal(a, b)


def test_chunks_cover_every_tile(monkeypatch):
    """Small chunks (and a short last chunk) give the one-chunk result up to the matrix product's rounding."""
    x, weight, bias = _case(2, 16, 8, 23, 18, seed=4)  # 2 * 6 * 5 = 60 tiles
    u = winograd_weight(weight)
    whole = conv3x3_winograd(x, u, bias, True)
    monkeypatch.setattr(winograd_module, "_CHUNK_BYTES", 36 * 4 * 16 * 7)  # 7 tiles per chunk: 8 full + 4
    chunked = conv3x3_winograd(x, u, bias, True)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    _assert_close(chunked, _reference(x, weight, bias, True))


def test_weight_transform_is_g_w_gt():
    weight = _case(1, 3, 2, 4, 4, seed=5)[1]
    u = winograd_weight(weight)
    assert u.shape == (36, 3, 2) and u.dtype == torch.float32 and u.is_contiguous()
    g = torch.tensor(winograd_module._G, dtype=torch.float64)
    for o in range(2):
        for i in range(3):
            expected = g @ weight[o, i].double() @ g.T  # [6, 6]
            torch.testing.assert_close(u[:, i, o].double(), expected.reshape(36), rtol=1e-6, atol=1e-7)
    # hand-computed corner: U[0, 0] = w[0, 0] / 16, U[35] = w[2, 2]
    torch.testing.assert_close(u[0, :, :].T, weight[:, :, 0, 0] / 16)
    torch.testing.assert_close(u[35, :, :].T, weight[:, :, 2, 2])


def test_empty_inputs():
    weight = torch.randn(4, 3, 3, 3)
    u = winograd_weight(weight)
    assert conv3x3_winograd(torch.randn(0, 3, 8, 8), u).shape == (0, 4, 8, 8)
    assert conv3x3_winograd(torch.randn(2, 3, 0, 5), u).shape == (2, 4, 0, 5)
    bias = torch.tensor([1.0, -2.0, 0.5, 0.0])
    y = conv3x3_winograd(torch.randn(1, 0, 5, 6), winograd_weight(torch.randn(4, 0, 3, 3)), bias, True)
    assert torch.equal(y, bias.clamp(min=0).view(1, 4, 1, 1).expand(1, 4, 5, 6))


def test_opcheck():
    x, weight, bias = _case(1, 6, 5, 9, 7, seed=6)
    torch.library.opcheck(
        torch.ops.detcore.conv3x3_winograd.default, (x, winograd_weight(weight), bias, True)
    )


def test_bad_inputs():
    x, weight, bias = _case(1, 6, 5, 9, 7, seed=7)
    u = winograd_weight(weight)
    with pytest.raises(ValueError, match=r"x must have shape \[N, C_in, H, W\]"):
        conv3x3_winograd(x[0], u)
    with pytest.raises(ValueError, match=r"u must have shape \[36, C_in=6, C_out\]"):
        conv3x3_winograd(x, u[:, :4])
    with pytest.raises(ValueError, match=r"bias must have shape \[C_out=5\]"):
        conv3x3_winograd(x, u, bias[:3])
    with pytest.raises(TypeError, match="x must be float32"):
        conv3x3_winograd(x.double(), u)
    with pytest.raises(ValueError, match="x must be on the CPU"):
        conv3x3_winograd(x.to("meta"), u)
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        conv3x3_winograd(x, u.numpy())
    with pytest.raises(ValueError, match=r"weight must have shape \[C_out, C_in, 3, 3\]"):
        winograd_weight(torch.randn(5, 6, 5, 5))
    with pytest.raises(TypeError, match="weight must be float32"):
        winograd_weight(weight.double())
