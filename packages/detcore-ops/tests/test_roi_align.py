"""roi_align / ROIAlign: vs torchvision, vs a float64 reference written here, gradients, custom-op checks."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcore.ops import ROIAlign, roi_align


def _bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[C, S] values of img [C, H, W] at samples y, x [S] (torchvision's rules), float64."""
    _, h, w = img.shape
    valid = (y >= -1) & (y <= h) & (x >= -1) & (x <= w)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()
    y_top, x_top = y_low >= h - 1, x_low >= w - 1
    y_low, x_low = torch.where(y_top, h - 1, y_low), torch.where(x_top, w - 1, x_low)
    y_high, x_high = torch.where(y_top, y_low, y_low + 1), torch.where(x_top, x_low, x_low + 1)
    y, x = torch.where(y_top, y_low.double(), y), torch.where(x_top, x_low.double(), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    v = (
        hy * hx * img[:, y_low, x_low]
        + hy * lx * img[:, y_low, x_high]
        + ly * hx * img[:, y_high, x_low]
        + ly * lx * img[:, y_high, x_high]
    )
    return v * valid


def reference_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """Direct float64 transcription of the ROIAlign definition (one bin at a time)."""
    ph, pw = output_size
    input, rois = input.double(), rois.double()
    out = torch.zeros(rois.shape[0], input.shape[1], ph, pw, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        if gh <= 0 or gw <= 0:
            continue
        bh, bw = rh / ph, rw / pw
        iy = torch.arange(gh, dtype=torch.float64)
        ix = torch.arange(gw, dtype=torch.float64)
        for i in range(ph):
            for j in range(pw):
                yy = y1 + i * bh + (iy + 0.5) * bh / gh
                xx = x1 + j * bw + (ix + 0.5) * bw / gw
                y, x = torch.meshgrid(yy, xx, indexing="ij")
                out[k, :, i, j] = _bilinear(input[b], y.flatten(), x.flatten()).sum(-1) / max(gh * gw, 1)
    return out


def random_rois(n, k, width, height, max_size, dtype=torch.float32, seed=0, margin=10.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [width + 2 * margin, height + 2 * margin]
    )
    xy = xy - margin
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * max_size
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([batch, xy, xy + wh], 1).to(dtype)


SETTINGS = [
    ((7, 7), 0.25, 0, True),
    ((7, 7), 0.25, 0, False),
    ((5, 3), 0.5, 2, True),
    ((4, 6), 1.0, -1, False),
    ((2, 2), 0.125, 3, True),
]


@pytest.mark.parametrize("output_size, scale, ratio, aligned", SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision_and_reference(output_size, scale, ratio, aligned, dtype):
    x = torch.randn(2, 5, 19, 27, dtype=dtype, generator=torch.Generator().manual_seed(1))
    rois = random_rois(2, 40, 27 / scale, 19 / scale, 20 / scale, dtype=dtype)
    ours = roi_align(x, rois, output_size, scale, ratio, aligned)
    expected = torchvision.ops.roi_align(x, rois, output_size, scale, ratio, aligned)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, expected, rtol=tol, atol=tol)
    ref = reference_roi_align(x, rois, output_size, scale, ratio, aligned)
    torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("output_size, scale, ratio, aligned", SETTINGS[:3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_matches_torchvision(output_size, scale, ratio, aligned, dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 17, 23, dtype=dtype, generator=gen)
    rois = random_rois(2, 30, 23 / scale, 17 / scale, 18 / scale, dtype=dtype, seed=3)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out = roi_align(a, rois, output_size, scale, ratio, aligned)
    grad = torch.randn(out.shape, dtype=dtype, generator=gen)
    out.backward(grad)
    torchvision.ops.roi_align(b, rois, output_size, scale, ratio, aligned).backward(grad)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("k", [3, 400])
def test_whole_image_and_per_roi_paths(k):
    # Few rois copy their own boxes; many rois covering the map transpose the whole image once.
    x = torch.randn(2, 33, 24, 31, generator=torch.Generator().manual_seed(4))
    rois = random_rois(2, k, 31, 24, 20, seed=5)
    out = roi_align(x, rois, 7, 1.0, 0, True)
    torch.testing.assert_close(out, torchvision.ops.roi_align(x, rois, 7, 1.0, 0, True), rtol=1e-5, atol=1e-5)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    roi_align(a, rois, 7, 1.0, 0, True).backward(grad)
    torchvision.ops.roi_align(b, rois, 7, 1.0, 0, True).backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_counts_agree(threads):
    x = torch.randn(2, 7, 15, 18, generator=torch.Generator().manual_seed(10))
    rois = random_rois(2, 300, 18, 15, 14, seed=11)
    grad = torch.randn(300, 7, 3, 3, generator=torch.Generator().manual_seed(12))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        a = x.clone().requires_grad_()
        out = roi_align(a, rois, 3, 1.0, 0, True)
        out.backward(grad)
    finally:
        torch.set_num_threads(before)
    b = x.clone().requires_grad_()
    expected = torchvision.ops.roi_align(b, rois, 3, 1.0, 0, True)
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_channels_last_and_non_contiguous_input():
    x = torch.randn(2, 40, 16, 20, generator=torch.Generator().manual_seed(7))
    rois = random_rois(2, 25, 20, 16, 12, seed=8)
    expected = torchvision.ops.roi_align(x, rois, (3, 4), 1.0, 2, True)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_align(cl, rois, (3, 4), 1.0, 2, True), expected, rtol=1e-5, atol=1e-5)
    wide = torch.randn(2, 40, 16, 40)
    wide[..., ::2] = x
    torch.testing.assert_close(
        roi_align(wide[..., ::2], rois, (3, 4), 1.0, 2, True), expected, rtol=1e-5, atol=1e-5
    )
    strided_rois = torch.zeros(25, 10)
    strided_rois[:, ::2] = rois
    torch.testing.assert_close(roi_align(x, strided_rois[:, ::2], (3, 4), 1.0, 2, True), expected)


def test_list_of_boxes_form():
    x = torch.randn(3, 4, 12, 14)
    boxes = [
        torch.tensor([[1.0, 2.0, 8.0, 9.0]]),
        torch.zeros(0, 4),
        torch.tensor([[0.0, 0.0, 13.0, 11.0], [3, 3, 5, 4]]),
    ]
    ours = roi_align(x, boxes, 3, 1.0, 2, True)
    torch.testing.assert_close(ours, torchvision.ops.roi_align(x, boxes, 3, 1.0, 2, True))
    assert roi_align(x, [], 3).shape == (0, 4, 3, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    x = torch.randn(1, 3, 10, 12)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 8.0], [0, 0.0, 2.0, 5.0, 3.5]])
    out = roi_align(x.to(dtype), rois.to(dtype), 4, 1.0, 0, True)
    assert out.dtype == dtype
    expected = roi_align(x.to(dtype).float(), rois.to(dtype).float(), 4, 1.0, 0, True)
    torch.testing.assert_close(out.float(), expected.to(dtype).float())


def test_adversarial_rois():
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, -50.0, -50.0, -20.0, -20.0],  # outside: zeros
            [1, 30.0, 30.0, 40.0, 45.0],  # outside bottom-right: zeros
            [0, 3.0, 3.0, 3.0, 3.0],  # zero size
            [1, 6.0, 5.0, 2.0, 1.0],  # negative size
            [0, -3.0, -2.0, 14.0, 12.0],  # larger than the map
            [1, 10.6, 8.7, 10.9, 8.9],  # sub-pixel at the border
        ],
        dtype=torch.float64,
    )
    for aligned in (False, True):
        for ratio in (0, 2):
            out = roi_align(x, rois, (3, 2), 1.0, ratio, aligned)
            expected = torchvision.ops.roi_align(x, rois, (3, 2), 1.0, ratio, aligned)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(out, reference_roi_align(x, rois, (3, 2), 1.0, ratio, aligned))
    assert (roi_align(x, rois[:2], 3, 1.0, 0, True) == 0).all()
    empty = roi_align(x, rois[:0], 3)
    assert empty.shape == (0, 3, 3, 3)
    x.requires_grad_()
    roi_align(x, rois[:0], 3).sum().backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("k", [2, 200])
def test_gradient_of_images_without_rois_is_zero(k):
    x = torch.randn(3, 4, 10, 12, requires_grad=True)
    rois = random_rois(1, k, 12, 10, 8, seed=13)
    rois[:, 0] = 1
    roi_align(x, rois, 2, 1.0, 0, True).sum().backward()
    assert (x.grad[0] == 0).all() and (x.grad[2] == 0).all()
    b = x.detach().clone().requires_grad_()
    torchvision.ops.roi_align(b, rois, 2, 1.0, 0, True).sum().backward()
    torch.testing.assert_close(x.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_huge_rois_are_finite_and_fast():
    # 1e8-pixel rois have ~1e13 samples per bin; only those near the map are visited.
    x = torch.randn(1, 2, 8, 9, requires_grad=True)
    rois = torch.tensor([[0, -1e8, -1e8, 1e8, 1e8], [0, 2.0, 2.0, 3e7, 5.0]])
    out = roi_align(x, rois, 7, 1.0, 0, True)
    assert torch.isfinite(out).all()
    assert out[0].abs().max() < 1e-6
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_empty_feature_map():
    x = torch.zeros(1, 2, 0, 5)
    out = roi_align(x, torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]]), 2, 1.0, 0, True)
    assert out.shape == (1, 2, 2, 2) and (out == 0).all()


def test_gradcheck_and_double_backward():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 1.2, 5.1, 4.7], [1, 2.2, 0.1, 6.4, 5.9], [0, -1.0, 3.0, 2.5, 7.0]], dtype=torch.float64
    )
    for aligned, ratio in ((True, 0), (False, 2)):
        fn = lambda t, r=ratio, a=aligned: roi_align(t, rois, (3, 2), 1.0, r, a)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_opcheck():
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    rois = torch.tensor([[0, 0.3, 1.2, 5.1, 4.7], [1, 2.2, 0.1, 6.4, 5.9]], dtype=torch.float64)
    torch.library.opcheck(torch.ops.detcore.roi_align.default, (x, rois, 0.5, 3, 2, 0, True))
    torch.library.opcheck(
        torch.ops.detcore.roi_align.default, (x.requires_grad_(), rois, 1.0, 2, 2, 2, False)
    )
    grad = torch.randn(2, 3, 3, 2, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.detcore._roi_align_backward.default, (grad, rois, 0.5, 3, 2, 2, 3, 8, 9, 0, True)
    )


def test_torch_compile_fullgraph():
    x = torch.randn(2, 3, 10, 12)
    rois = random_rois(2, 6, 12, 10, 8, seed=9)

    def fn(t, r):
        return roi_align(t, r, (3, 3), 1.0, 0, True) * 2

    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, rois), fn(x, rois))


def test_module():
    m = ROIAlign((7, 7), 0.25, 0)
    assert repr(m) == "ROIAlign(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)"
    x = torch.randn(1, 4, 20, 24)
    rois = torch.tensor([[0, 4.0, 8.0, 60.0, 70.0]], dtype=torch.float64)  # cast to the input dtype
    torch.testing.assert_close(m(x, rois), torchvision.ops.roi_align(x, rois.float(), (7, 7), 0.25, 0, True))


def test_bad_inputs():
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="rois must have shape"):
        roi_align(x, rois[:, :4], 2)
    with pytest.raises(ValueError, match="input must have shape"):
        roi_align(x[0], rois, 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        roi_align(x, rois, (2, -1))
    with pytest.raises(TypeError, match="output_size"):
        roi_align(x, rois, (2.0, 2))
    with pytest.raises(TypeError, match="same dtype as input"):
        roi_align(x, rois.double(), 2)
    with pytest.raises(TypeError, match="floating"):
        roi_align(x.long(), rois, 2)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_align(x, rois, 2, spatial_scale=0.0)
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_align(x, rois, 2, sampling_ratio=1.5)
    with pytest.raises(ValueError, match=r"batch index\) must be in \[0, 2\)"):
        roi_align(x, torch.tensor([[2, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="batch index"):
        roi_align(x, torch.tensor([[-1, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="finite"):
        roi_align(x, torch.tensor([[0, 1.0, float("nan"), 4.0, 4.0]]), 2)
    with pytest.raises(TypeError, match="rois must be a Tensor"):
        roi_align(x, "boxes", 2)
    if torch.device("meta") != x.device:
        with pytest.raises(ValueError, match="one device"):
            roi_align(x, rois.to("meta"), 2)
