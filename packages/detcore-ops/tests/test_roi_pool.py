"""roi_pool / ROIPool: vs torchvision, vs a float64 reference written here, gradients, custom-op checks."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcore.ops import ROIPool, roi_pool


def reference_roi_pool(input, rois, output_size, spatial_scale):
    """Direct transcription of torchvision's ROIPool definition, float64."""
    ph, pw = output_size
    input = input.double()
    _, c, h, w = input.shape
    out = torch.zeros(rois.shape[0], c, ph, pw, dtype=torch.float64)
    for k, roi in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (
            math.floor(v * spatial_scale + 0.5)
            if v * spatial_scale >= 0
            else -math.floor(-v * spatial_scale + 0.5)
            for v in roi[1:]
        )
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        for i in range(ph):
            for j in range(pw):
                h0 = min(max(math.floor(i * rh / ph) + y1, 0), h)
                h1 = min(max(math.ceil((i + 1) * rh / ph) + y1, 0), h)
                w0 = min(max(math.floor(j * rw / pw) + x1, 0), w)
                w1 = min(max(math.ceil((j + 1) * rw / pw) + x1, 0), w)
                if h1 > h0 and w1 > w0:
                    out[k, :, i, j] = input[int(roi[0]), :, h0:h1, w0:w1].amax(dim=(1, 2))
    return out


def random_rois(n, k, width, height, max_size, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([width + 20.0, height + 20.0]) - 10
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * max_size - 2
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([batch, xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("output_size, scale", [((7, 7), 0.25), ((3, 5), 0.5), ((2, 2), 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision_and_reference(output_size, scale, dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 15, 19, dtype=dtype, generator=gen)
    rois = random_rois(2, 60, 19 / scale, 15 / scale, 12 / scale, dtype=dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ours = roi_pool(a, rois, output_size, scale)
    expected = torchvision.ops.roi_pool(b, rois, output_size, scale)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    torch.testing.assert_close(ours.double(), reference_roi_pool(x, rois, output_size, scale), rtol=0, atol=0)
    grad = torch.randn(ours.shape, dtype=dtype, generator=gen)
    ours.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("k", [3, 300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_many_channels_with_ties(k, dtype):
    # 21 channels run both the vector and the scalar channel loops; small integers make many ties.
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-3, 4, (2, 21, 12, 14), generator=gen).to(dtype)
    rois = random_rois(2, k, 14, 12, 10, dtype=dtype, seed=6)
    out, argmax = torch.ops.detcore.roi_pool(x, rois, 1.0, 3, 3)
    # torchvision's raw op gives the argmax too; touching torchvision.ops first loads its op library
    # (and skips this test in the compat session, which has no torchvision)
    tv_roi_pool = torchvision.ops.roi_pool and torch.ops.torchvision.roi_pool
    expected, expected_argmax = tv_roi_pool(x, rois, 1.0, 3, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(argmax, expected_argmax.long(), rtol=0, atol=0)


def test_argmax_and_ties():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 5.0
    out, argmax = torch.ops.detcore.roi_pool(
        x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0], [0, 9.0, 9.0, 12.0, 12.0]]), 1.0, 1, 1
    )
    assert out[0].item() == 5.0 and argmax[0].item() == 1 * 4 + 2 and argmax.dtype == torch.int64
    assert out[1].item() == 0.0 and argmax[1].item() == -1  # empty bin
    ties = torch.ones(1, 1, 3, 3)
    _, arg = torch.ops.detcore.roi_pool(ties, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 1.0, 1, 1)
    assert arg.item() == 0  # first maximum in row-major order


def test_adversarial_and_layouts():
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    rois = torch.tensor(
        [
            [0, -50.0, -50.0, -20.0, -20.0],
            [1, 3.0, 3.0, 3.0, 3.0],
            [1, 6.0, 5.0, 2.0, 1.0],
            [0, -3.0, -2.0, 14.0, 12.0],
            [1, -1e9, -1e9, 1e9, 1e9],
        ]
    )
    out = roi_pool(x, rois[:4], (3, 2), 1.0)
    torch.testing.assert_close(out, torchvision.ops.roi_pool(x, rois[:4], (3, 2), 1.0))
    assert torch.isfinite(roi_pool(x, rois, 2, 1.0)).all()
    assert roi_pool(x, rois[:0], 2).shape == (0, 3, 2, 2)
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_pool(cl, rois[:4], (3, 2), 1.0), out)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    torch.testing.assert_close(roi_pool(x, boxes, 2), torchvision.ops.roi_pool(x, boxes, 2))
    for dtype in (torch.float16, torch.bfloat16):
        half = roi_pool(x.detach().to(dtype), rois[:4].to(dtype), (3, 2), 1.0)
        assert half.dtype == dtype
        torch.testing.assert_close(
            half, roi_pool(x.detach().to(dtype).float(), rois[:4].to(dtype).float(), (3, 2), 1.0).to(dtype)
        )


def test_gradcheck_opcheck_compile():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 1.2, 5.1, 4.7], [1, 2.2, 0.1, 6.4, 5.9]], dtype=torch.float64)
    fn = lambda t: roi_pool(t, rois, (3, 2), 1.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.library.opcheck(torch.ops.detcore.roi_pool.default, (x, rois, 1.0, 3, 2))
    _, argmax = torch.ops.detcore.roi_pool(x.detach(), rois, 1.0, 3, 2)
    grad = torch.randn(2, 2, 3, 2, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.detcore._roi_pool_backward.default, (grad, rois, argmax, 1.0, 3, 2, 2, 2, 6, 7)
    )
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), fn(x))


def test_module_and_bad_inputs():
    m = ROIPool((7, 7), 0.25)
    assert repr(m) == "ROIPool(output_size=(7, 7), spatial_scale=0.25)"
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 20.0, 24.0]])
    torch.testing.assert_close(m(x, rois), torchvision.ops.roi_pool(x, rois, (7, 7), 0.25))
    with pytest.raises(ValueError, match="rois must have shape"):
        roi_pool(x, rois[:, 1:], 2)
    with pytest.raises(ValueError, match="batch index"):
        roi_pool(x, torch.tensor([[3, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="input must have shape"):
        roi_pool(x[0], rois, 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        roi_pool(x, rois, (0, 2))
    with pytest.raises(TypeError, match="same dtype"):
        roi_pool(x, rois.double(), 2)
    with pytest.raises(ValueError, match="argmax must hold"):
        torch.ops.detcore._roi_pool_backward(
            torch.ones(1, 3, 2, 2),
            rois,
            torch.full((1, 3, 2, 2), 99, dtype=torch.int64),
            1.0,
            2,
            2,
            2,
            3,
            8,
            8,
        )
