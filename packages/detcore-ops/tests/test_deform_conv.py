"""deform_conv2d / DeformConv / ModulatedDeformConv against torchvision and a float64 pure-PyTorch reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from detcore.ops import DeformConv, ModulatedDeformConv, deform_conv2d
from detcore.ops import deform_conv as deform_conv_module

# ------------------------------------------------------------------------------------------- reference


def _bilinear_ref(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of img [C, H, W] at points y, x [P] -> [C, P]; zero outside (-1, H) x (-1, W)."""
    _, h, w = img.shape
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0  # floor has zero gradient, so these carry d/dy, d/dx
    out = img.new_zeros((img.shape[0], y.shape[0]))
    for dy, dx, wgt in (
        (0, 0, (1 - ly) * (1 - lx)),
        (0, 1, (1 - ly) * lx),
        (1, 0, ly * (1 - lx)),
        (1, 1, ly * lx),
    ):
        yy, xx = (y0 + dy).long(), (x0 + dx).long()
        valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        v = img[:, yy.clamp(0, h - 1), xx.clamp(0, w - 1)] * valid
        out = out + v * wgt
    return out


def deform_conv_ref(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Straightforward float64 deformable convolution: gather every sample, then one einsum per group."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    n, c, h, w = x.shape
    c_out, c_g, kh, kw = weight.shape
    groups, kk = c // c_g, kh * kw
    og = offset.shape[1] // (2 * kk)
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    base_y = (torch.arange(ho, dtype=x.dtype) * sh - ph)[:, None].expand(ho, wo).reshape(-1)
    base_x = (torch.arange(wo, dtype=x.dtype) * sw - pw)[None, :].expand(ho, wo).reshape(-1)
    cpo = c // og
    images = []
    for b in range(n):
        taps = []
        for k in range(kk):
            i, j = divmod(k, kw)
            per_group = []
            for g in range(og):
                dy = offset[b, g * 2 * kk + 2 * k].reshape(-1)
                dx = offset[b, g * 2 * kk + 2 * k + 1].reshape(-1)
                s = _bilinear_ref(x[b, g * cpo : (g + 1) * cpo], base_y + i * dh + dy, base_x + j * dw + dx)
                if mask is not None:
                    s = s * mask[b, g * kk + k].reshape(-1)
                per_group.append(s)
            taps.append(torch.cat(per_group, 0))  # [C, P]
        cols = torch.stack(taps, 1)  # [C, KK, P]
        outs = []
        for g in range(groups):
            wg = weight[g * (c_out // groups) : (g + 1) * (c_out // groups)].reshape(c_out // groups, c_g, kk)
            outs.append(torch.einsum("ock,ckp->op", wg, cols[g * c_g : (g + 1) * c_g]))
        images.append(torch.cat(outs, 0).reshape(c_out, ho, wo))
    out = torch.stack(images, 0) if images else x.new_zeros((0, c_out, ho, wo))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


# ------------------------------------------------------------------------------------------- inputs

# (name, N, C_in, H, W, C_out, (kh, kw), stride, padding, dilation, groups, offset_groups, use_mask, bias)
CONFIGS = [
    ("v2_basic", 2, 4, 7, 9, 6, (3, 3), 1, 1, 1, 1, 1, True, True),
    ("v1_basic", 2, 4, 7, 9, 6, (3, 3), 1, 1, 1, 1, 1, False, False),
    ("groups2", 1, 4, 6, 7, 6, (3, 3), 1, 1, 1, 2, 1, True, True),
    ("offset_groups2", 2, 4, 6, 7, 5, (3, 3), 1, 1, 1, 1, 2, True, False),
    ("both_groups", 1, 8, 6, 6, 4, (3, 3), 1, 1, 1, 2, 4, False, True),
    ("stride2", 2, 3, 9, 8, 4, (3, 3), 2, 1, 1, 1, 1, True, True),
    ("dilation2", 1, 3, 9, 10, 4, (3, 3), 1, 2, 2, 1, 1, True, True),
    ("nonsquare", 1, 3, 7, 8, 2, (2, 3), (2, 1), (0, 2), (1, 2), 1, 3, True, True),
    ("no_padding", 2, 2, 5, 5, 3, (3, 3), 1, 0, 1, 1, 1, False, True),
    ("one_by_one", 1, 3, 4, 5, 2, (1, 1), 1, 0, 1, 1, 1, True, True),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _make(cfg, dtype=torch.float64, offset_scale=1.5, seed=0):
    _, n, c, h, w, c_out, (kh, kw), stride, padding, dilation, groups, og, use_mask, with_bias = cfg
    g = torch.Generator().manual_seed(seed)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c // groups, kh, kw, generator=g, dtype=dtype)
    offset = torch.randn(n, 2 * og * kh * kw, ho, wo, generator=g, dtype=dtype) * offset_scale
    mask = torch.rand(n, og * kh * kw, ho, wo, generator=g, dtype=dtype) if use_mask else None
    bias = torch.randn(c_out, generator=g, dtype=dtype) if with_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    return x, offset, weight, bias, mask, kwargs


def _grads(fn, x, offset, weight, bias, mask, kwargs, grad_seed=1):
    leaves = [
        t.detach().clone().requires_grad_() if t is not None else None
        for t in (x, offset, weight, bias, mask)
    ]
    out = fn(leaves[0], leaves[1], leaves[2], leaves[3], mask=leaves[4], **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, wanted, grad_out)
    return out.detach(), grads


# ------------------------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_forward_matches_reference_and_torchvision(cfg):
    x, offset, weight, bias, mask, kwargs = _make(cfg)
    out = deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    ref = deform_conv_ref(x, offset, weight, bias, mask=mask, **kwargs)
    tv = torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, tv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_gradients_match_torchvision(cfg, dtype):
    x, offset, weight, bias, mask, kwargs = _make(cfg, dtype=dtype)
    out, grads = _grads(deform_conv2d, x, offset, weight, bias, mask, kwargs)
    tv_out, tv_grads = _grads(torchvision.ops.deform_conv2d, x, offset, weight, bias, mask, kwargs)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, tv_out, **tol)
    assert len(grads) == len(tv_grads)
    for got, want in zip(grads, tv_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("cfg", CONFIGS[:6], ids=[c[0] for c in CONFIGS[:6]])
def test_gradients_match_reference_autograd(cfg):
    x, offset, weight, bias, mask, kwargs = _make(cfg)
    _, grads = _grads(deform_conv2d, x, offset, weight, bias, mask, kwargs)
    _, ref_grads = _grads(deform_conv_ref, x, offset, weight, bias, mask, kwargs)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("groups", [1, 2])
def test_zero_offset_equals_conv2d(groups):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    offset = torch.zeros(2, 18, 3, 4, dtype=torch.float64)
    out = deform_conv2d(x, offset, weight, bias, stride=2, padding=1)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, stride=2, padding=1, groups=groups))
    ones = torch.ones(2, 9, 3, 4, dtype=torch.float64)
    out_mask = deform_conv2d(x, offset, weight, bias, stride=2, padding=1, mask=ones)
    torch.testing.assert_close(out_mask, out)
    # Integer sampling points on the padding border: gradients still equal torchvision's (one-sided rules).
    _, grads = _grads(deform_conv2d, x, offset, weight, bias, ones, dict(stride=2, padding=1))
    _, tv_grads = _grads(
        torchvision.ops.deform_conv2d, x, offset, weight, bias, ones, dict(stride=2, padding=1)
    )
    for got, want in zip(grads, tv_grads):
        torch.testing.assert_close(got, want)


def test_integer_offsets_shift_the_input():
    """Offset (dy, dx) = (1, -2) on every tap of a 1x1 kernel reads x[y + 1, x - 2] (zero outside)."""
    x = torch.arange(2 * 5 * 6, dtype=torch.float64).reshape(1, 2, 5, 6)
    weight = torch.eye(2, dtype=torch.float64).reshape(2, 2, 1, 1)
    offset = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 5, 6)
    out = deform_conv2d(x, offset, weight)
    expected = torch.zeros_like(x)
    expected[:, :, :4, 2:] = x[:, :, 1:, :4]
    torch.testing.assert_close(out, expected)


def test_far_away_and_nan_free_outside_samples():
    """Every sample far outside the input: output is the bias, gradients of input/offset/mask are zero."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    for value in (1e6, -1e6, 1e30):
        offset = torch.full((1, 18, 4, 4), value, dtype=torch.float64)
        mask = torch.rand(1, 9, 4, 4, generator=g, dtype=torch.float64)
        out, grads = _grads(deform_conv2d, x, offset, weight, bias, mask, dict(padding=1))
        torch.testing.assert_close(out, bias.view(1, 3, 1, 1).expand(1, 3, 4, 4))
        for grad in (grads[0], grads[1], grads[2], grads[4]):  # input, offset, weight, mask
            assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("use_mask", [True, False])
def test_gradcheck(use_mask):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 4, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    # Offsets away from integers so the piecewise-bilinear function is smooth around the test point.
    offset = (torch.rand(1, 16, 5, 4, generator=g, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    mask = torch.rand(1, 8, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) if use_mask else None

    def fn(x, offset, weight, bias, *mask):
        return deform_conv2d(x, offset, weight, bias, padding=(1, 0), mask=mask[0] if mask else None)

    inputs = (x, offset, weight, bias) + ((mask,) if use_mask else ())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def _op_args(use_mask: bool):
    x, offset, weight, bias, mask, _ = _make(CONFIGS[3] if use_mask else CONFIGS[1])
    if mask is None:
        mask = x.new_zeros((0,))
    if bias is None:
        bias = x.new_zeros((weight.shape[0],))
    og = offset.shape[1] // 18
    return [x, weight, offset, mask, bias, 1, 1, 1, 1, 1, 1, 1, og, use_mask]


@pytest.mark.parametrize("use_mask", [True, False])
def test_opcheck(use_mask):
    args = _op_args(use_mask)
    for i in (0, 1, 2, 4) + ((3,) if use_mask else ()):
        args[i] = args[i].requires_grad_()
    torch.library.opcheck(torch.ops.detcore.deform_conv2d.default, args)
    out = torch.ops.detcore.deform_conv2d(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    bwd_args = [torch.randn_like(out)] + [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    torch.library.opcheck(torch.ops.detcore._deform_conv2d_backward.default, bwd_args)


def test_torch_compile_fullgraph():
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[0], dtype=torch.float32)

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs).relu()

    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(x, offset, weight, bias, mask), fn(x, offset, weight, bias, mask))


def test_empty_batch():
    weight = torch.randn(5, 3, 3, 3, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    x = torch.zeros(0, 3, 8, 9, requires_grad=True)
    offset = torch.zeros(0, 18, 4, 5, requires_grad=True)
    mask = torch.zeros(0, 9, 4, 5, requires_grad=True)
    out = deform_conv2d(x, offset, weight, bias, stride=2, padding=1, mask=mask)
    assert out.shape == (0, 5, 4, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape and offset.grad.shape == offset.shape and mask.grad.shape == mask.shape
    assert torch.count_nonzero(weight.grad) == 0 and torch.count_nonzero(bias.grad) == 0


def test_non_contiguous_inputs():
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[0])
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    ot = offset.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    mt = torch.stack([mask, mask], -1)[..., 0]
    wt = weight.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    bt = torch.stack([bias, bias], 1)[:, 0]
    assert not any(t.is_contiguous() for t in (xt, ot, mt, wt, bt))
    _, grads = _grads(deform_conv2d, xt, ot, wt, bt, mt, kwargs)
    out_ref, ref_grads = _grads(deform_conv2d, x, offset, weight, bias, mask, kwargs)
    torch.testing.assert_close(deform_conv2d(xt, ot, wt, bt, mask=mt, **kwargs), out_ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


# CONFIGS[5] columns: 27 rows x (5 x 4) outputs = 108 elements per output row, 540 per image.
@pytest.mark.parametrize("budget", [1, 250, 1100], ids=["row_tiles_1", "row_tiles_2_2_1", "two_images"])
def test_blocks_and_threads_give_the_same_result(monkeypatch, budget):
    """Row tiles of one image, blocks of several images, and one thread all equal the default path."""
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[5], dtype=torch.float64)
    x, offset, mask = torch.cat([x] * 3), torch.cat([offset] * 3), torch.cat([mask] * 3)  # 6 images
    out, grads = _grads(deform_conv2d, x, offset, weight, bias, mask, kwargs)
    monkeypatch.setattr(deform_conv_module, "_BLOCK_ELEMENTS", budget)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out1, grads1 = _grads(deform_conv2d, x, offset, weight, bias, mask, kwargs)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(out1, out, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads1, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out1, deform_conv_ref(x, offset, weight, bias, mask=mask, **kwargs))


def test_float16_matches_torchvision():
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[0], dtype=torch.float32, offset_scale=1.0)
    args = [t.half() for t in (x, offset, weight, bias)]
    out = deform_conv2d(*args, mask=mask.half(), **kwargs)
    tv = torchvision.ops.deform_conv2d(*args, mask=mask.half(), **kwargs)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, tv, rtol=2e-2, atol=5e-2)
    # Computed in float32 from the half inputs, then rounded once.
    want = deform_conv2d(*[a.float() for a in args], mask=mask.half().float(), **kwargs).half()
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_bfloat16_computes_in_float32():
    """torchvision has no bfloat16 CPU kernel; detcore computes bfloat16 in float32 and rounds the result."""
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[0], dtype=torch.float32)
    args = [t.bfloat16() for t in (x, offset, weight, bias, mask)]
    leaves = [a.clone().requires_grad_() for a in args]
    out = deform_conv2d(*leaves[:4], mask=leaves[4], **kwargs)
    assert out.dtype == torch.bfloat16
    want = deform_conv2d(*[a.float() for a in args[:4]], mask=args[4].float(), **kwargs)
    torch.testing.assert_close(out, want.bfloat16(), rtol=0, atol=0)
    out.float().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 for t in leaves)


# ------------------------------------------------------------------------------------------- bad input


def _good():
    x, offset, weight, _, mask, _ = _make(CONFIGS[3], dtype=torch.float32)  # og = 2, padding 1
    return dict(input=x, offset=offset, weight=weight, bias=torch.zeros(5), mask=mask, padding=1)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (dict(input=torch.zeros(4, 6, 7)), ValueError, "input must have shape"),
        (dict(weight=torch.zeros(5, 4, 3)), ValueError, "weight must have shape"),
        (dict(offset=torch.zeros(2, 36, 6)), ValueError, "offset must have shape"),
        (dict(mask=torch.zeros(2, 18, 6)), ValueError, "mask must have shape"),
        (dict(offset=torch.zeros(2, 35, 6, 7)), ValueError, "offset.shape\\[1\\]"),
        (dict(offset=torch.zeros(2, 36, 5, 7)), ValueError, "offset must have shape"),
        (dict(offset=torch.zeros(1, 36, 6, 7)), ValueError, "offset must have shape"),
        (dict(mask=torch.zeros(2, 9, 6, 7)), ValueError, "mask must have shape"),
        (dict(weight=torch.zeros(5, 3, 3, 3)), ValueError, "weight.shape\\[1\\]"),
        (dict(weight=torch.zeros(5, 2, 3, 3)), ValueError, "divisible by groups"),
        (dict(offset=torch.zeros(2, 54, 6, 7), mask=None), ValueError, "offset_groups"),
        (dict(bias=torch.zeros(4)), ValueError, "bias must have shape"),
        (dict(input=torch.zeros(2, 4, 6, 7, dtype=torch.int64)), TypeError, "input must be a floating"),
        (dict(mask=[1.0]), TypeError, "mask must be a torch.Tensor"),
        (dict(weight=torch.zeros(5, 4, 3, 3, dtype=torch.float64)), TypeError, "one dtype"),
        (dict(input=torch.zeros(2, 4, 6, 7, device="meta")), ValueError, "one device"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(padding=-1), ValueError, "padding must be >= 0"),
        (dict(dilation=(1, 1, 1)), TypeError, "dilation must be an int or a pair"),
        (dict(stride=1.5), TypeError, "stride must be an int"),
        (dict(input=torch.zeros(2, 4, 1, 1), padding=0), ValueError, "too small"),
    ],
)
def test_bad_inputs(change, exc, match):
    kwargs = _good()
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        deform_conv2d(**kwargs)


def test_meta_tensors_give_output_shape():
    x = torch.empty(2, 4, 10, 12, device="meta")
    weight = torch.empty(6, 2, 3, 3, device="meta")
    offset = torch.empty(2, 36, 5, 6, device="meta")
    out = deform_conv2d(x, offset, weight, stride=2, padding=1)
    assert out.shape == (2, 6, 5, 6) and out.device.type == "meta"


# ------------------------------------------------------------------------------------------- modules


def test_deform_conv_module_matches_functional_with_norm_and_activation():
    torch.manual_seed(0)
    norm = nn.GroupNorm(2, 8)
    conv = DeformConv(
        4, 8, 3, stride=1, padding=2, dilation=2, groups=2, deformable_groups=2, norm=norm, activation=F.relu
    )
    assert conv.bias is None and set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias"}
    assert conv.weight.shape == (8, 2, 3, 3)
    x = torch.randn(2, 4, 6, 5)
    offset = torch.randn(2, 36, 6, 5)
    out = conv(x, offset)
    want = F.relu(norm(torchvision.ops.deform_conv2d(x, offset, conv.weight, padding=2, dilation=2)))
    torch.testing.assert_close(out, want)
    out.sum().backward()
    assert conv.weight.grad is not None and norm.weight.grad is not None


def test_modulated_deform_conv_module():
    torch.manual_seed(1)
    conv = ModulatedDeformConv(3, 4, (3, 3), stride=2, padding=1, deformable_groups=1)
    assert conv.bias is not None and torch.count_nonzero(conv.bias) == 0
    assert set(conv.state_dict()) == {"weight", "bias"}
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 7, 8)
    offset = torch.randn(2, 18, 4, 4)
    mask = torch.rand(2, 9, 4, 4)
    out = conv(x, offset, mask)
    want = torchvision.ops.deform_conv2d(x, offset, conv.weight, conv.bias, stride=2, padding=1, mask=mask)
    torch.testing.assert_close(out, want)
    with pytest.raises(TypeError, match="mask"):
        conv(x, offset, None)


def test_module_weight_init_is_kaiming_uniform_relu():
    torch.manual_seed(2)
    conv = ModulatedDeformConv(64, 32, 3, groups=2)
    fan_in = 32 * 9
    bound = math.sqrt(6.0 / fan_in)  # gain sqrt(2) * sqrt(3 / fan_in)
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.95 * bound
    assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound


def test_module_extra_repr():
    conv = DeformConv(4, 8, 3, stride=2, padding=1, deformable_groups=2)
    assert conv.extra_repr() == (
        "in_channels=4, out_channels=8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), "
        "groups=1, deformable_groups=2, bias=False"
    )
    assert "bias=True" in ModulatedDeformConv(4, 8, 3).extra_repr()


def test_module_empty_batch_skips_norm():
    calls = []

    def activation(t):
        calls.append(t)
        return t

    conv = ModulatedDeformConv(3, 6, 3, stride=2, padding=1, norm=nn.BatchNorm2d(6), activation=activation)
    out = conv(torch.zeros(0, 3, 9, 10), torch.zeros(0, 18, 5, 5), torch.zeros(0, 9, 5, 5))
    assert out.shape == (0, 6, 5, 5) and not calls
    out = DeformConv(3, 6, (1, 3))(torch.zeros(0, 3, 4, 4), torch.zeros(0, 6, 4, 2))
    assert out.shape == (0, 6, 4, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "in_channels"),
        (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), "out_channels"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, deformable_groups=3), "deformable_groups"),
        (dict(in_channels=4, out_channels=4, kernel_size=0), "kernel_size"),
    ],
)
def test_module_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeformConv(**kwargs)


def test_block_plan_covers_every_row_once(monkeypatch):
    x, offset, weight, bias, mask, _ = _make(CONFIGS[5])
    args = (x, weight, offset, mask, bias, 2, 2, 1, 1, 1, 1, 1, 1, True)
    for budget, want in [
        (1, [(n, 1, h, 1) for n in range(2) for h in range(5)]),
        (250, [(n, 1, h, r) for n in range(2) for h, r in ((0, 2), (2, 2), (4, 1))]),
        (1100, [(0, 2, 0, 5)]),
        (540, [(0, 1, 0, 5), (1, 1, 0, 5)]),
    ]:
        monkeypatch.setattr(deform_conv_module, "_BLOCK_ELEMENTS", budget)
        assert deform_conv_module._Prepared(*args).blocks() == want


def test_non_finite_input_pixel_only_reaches_samples_that_use_it():
    """An inf at pixel (0, 0) reaches exactly the outputs torchvision's reaches (out-of-plane neighbours read 0)."""
    x, offset, weight, bias, mask, kwargs = _make(CONFIGS[0], dtype=torch.float64, offset_scale=2.0)
    x = x.clone()
    x[:, :, 0, 0] = math.inf
    out = deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    tv = torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)
    finite = torch.isfinite(tv)
    assert 0 < finite.sum() < finite.numel()
    assert torch.equal(torch.isfinite(out), finite)
    torch.testing.assert_close(out[finite], tv[finite])


def test_deform_conv_module_with_bias_extension():
    conv = DeformConv(2, 4, 3, padding=1, bias=True)
    assert set(conv.state_dict()) == {"weight", "bias"} and torch.count_nonzero(conv.bias) == 0
    with torch.no_grad():
        conv.bias.fill_(0.5)
    x, offset = torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5)
    torch.testing.assert_close(
        conv(x, offset), torchvision.ops.deform_conv2d(x, offset, conv.weight, conv.bias, padding=1)
    )
