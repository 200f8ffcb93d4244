"""CUDA kernels of detcore-ops-cuda against the CPU kernels of the same ``detcore::*`` ops, torchvision's CUDA
ops and detectron2's golden data. Every test needs a CUDA GPU and is skipped without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor

import detcore.ops  # noqa: F401  (registers the detcore::* custom ops and their CPU kernels)
from detcore.ops._dispatch import kernel_for

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ops = torch.ops.detcore
CUDA = torch.device("cuda")
ALL_OPS = [
    "_deform_conv2d_backward",
    "_roi_align_backward",
    "_roi_align_rotated_backward",
    "_roi_pool_backward",
    "batched_nms",
    "batched_nms_rotated",
    "box_iou",
    "box_iou_rotated",
    "deform_conv2d",
    "nms",
    "nms_rotated",
    "paste_masks_in_image",
    "roi_align",
    "roi_align_rotated",
    "roi_pool",
]


def _golden_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "reference" / "golden" / "ops"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/reference/golden/ops not found above this test file")


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(_golden_dir() / name) as z:
        return {k: z[k] for k in z.files}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _boxes(n: int, g: torch.Generator, scale: float = 100.0, dtype: torch.dtype = torch.float32) -> Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 3
    return torch.cat([xy, xy + wh], 1).to(dtype)


def _rotated(n: int, g: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 1
    a = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 360
    return torch.cat([c, wh, a], 1).to(dtype)


def _rois(k: int, batch: int, g: torch.Generator, scale: float, dtype: torch.dtype) -> Tensor:
    b = _boxes(k, g, scale, torch.float64)
    b[0] = torch.tensor([-10.0, -5.0, 3.0, 2.0])  # partly outside
    b[1] = torch.tensor([5.0 * scale, 4.0 * scale, 5.0 * scale + 3, 4.0 * scale + 2])  # entirely outside
    b[2] = torch.tensor([20.0, 20.0, 20.0, 20.0])  # zero size
    b[3] = torch.tensor([30.0, 30.0, 25.0, 20.0])  # negative size
    idx = torch.randint(0, batch, (k, 1), generator=g).to(torch.float64)
    return torch.cat([idx, b], 1).to(dtype)


def _cuda(*tensors: Tensor) -> list[Tensor]:
    return [t.to(CUDA) for t in tensors]


def _close(cuda: Tensor, cpu: Tensor, atol: float, rtol: float = 0.0) -> None:
    assert cuda.device.type == "cuda"
    assert cuda.dtype == cpu.dtype and cuda.shape == cpu.shape
    torch.testing.assert_close(cuda.cpu(), cpu, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------------- provider


def test_every_op_dispatches_to_the_cuda_provider() -> None:
    from detcore.ops_cuda import _native
    from detcore.ops_cuda.kernels import CUDA_KERNELS, cuda_kernels

    assert cuda_kernels() is CUDA_KERNELS
    assert CUDA_KERNELS.ops() == ALL_OPS
    for op in ALL_OPS:
        assert hasattr(ops, op), f"detcore::{op} is not registered"
        assert kernel_for(op, CUDA) is CUDA_KERNELS.get(op)
    assert _native.native().device_count() == torch.cuda.device_count()


# ---------------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 700])
def test_nms_matches_cpu_and_torchvision(dtype: torch.dtype, n: int) -> None:
    g = _gen(n)
    boxes, scores = _boxes(n, g, dtype=dtype), torch.rand(n, generator=g, dtype=dtype)
    idxs = torch.randint(0, 5, (n,), generator=g)
    cb, cs, ci = _cuda(boxes, scores, idxs)
    for thr in (0.0, 0.3, 0.5, 0.9, 1.0, -0.5):
        keep = ops.nms(cb, cs, thr)
        assert keep.device.type == "cuda" and keep.dtype == torch.int64
        assert torch.equal(keep.cpu(), ops.nms(boxes, scores, thr))
        assert torch.equal(keep, torchvision.ops.nms(cb, cs, thr))
        bkeep = ops.batched_nms(cb, cs, ci, thr)
        assert torch.equal(bkeep.cpu(), ops.batched_nms(boxes, scores, idxs, thr))
        if thr >= 0:  # torchvision's coordinate trick lets categories suppress each other below 0
            assert torch.equal(bkeep, torchvision.ops.batched_nms(cb, cs, ci, thr))


def test_nms_edge_cases() -> None:
    g = _gen(1)
    boxes = _boxes(300, g)
    boxes[100:200] = boxes[:100]  # exact duplicates
    boxes[200:210, 2:] = boxes[200:210, :2]  # zero area
    boxes[210:220, 2:] = boxes[210:220, :2] - 5  # negative size
    scores = torch.rand(300, generator=g)
    scores[:150] = 0.5  # many equal scores: index order
    cb, cs = _cuda(boxes, scores)
    for thr in (0.0, 0.5):
        assert torch.equal(ops.nms(cb, cs, thr).cpu(), ops.nms(boxes, scores, thr))
    # Non-contiguous inputs, half and bfloat16.
    wide = torch.cat([boxes, boxes], 1)[:, :4]
    assert torch.equal(ops.nms(wide.to(CUDA), cs, 0.5).cpu(), ops.nms(wide, scores, 0.5))
    for dtype in (torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(ops.nms(b.to(CUDA), s.to(CUDA), 0.5).cpu(), ops.nms(b, s, 0.5))


def test_batched_nms_is_exact_per_category_for_large_coordinates() -> None:
    g = _gen(2)
    boxes = _boxes(500, g, scale=50.0, dtype=torch.float32) + 1e6  # an offset trick would lose precision
    scores = torch.rand(500, generator=g)
    idxs = torch.randint(0, 7, (500,), generator=g) * 1000
    cb, cs, ci = _cuda(boxes, scores, idxs)
    keep = ops.batched_nms(cb, cs, ci, 0.5).cpu()
    assert torch.equal(keep, ops.batched_nms(boxes, scores, idxs, 0.5))
    expected = [
        i
        for c in idxs.unique()
        for i in (idxs == c).nonzero()[:, 0][ops.nms(boxes[idxs == c], scores[idxs == c], 0.5)]
    ]
    assert sorted(keep.tolist()) == sorted(int(i) for i in expected)


def test_nms_many_boxes() -> None:
    g = _gen(3)
    boxes, scores = _boxes(20000, g, scale=1000.0), torch.rand(20000, generator=g)
    cb, cs = _cuda(boxes, scores)
    keep = ops.nms(cb, cs, 0.5)
    assert torch.equal(keep, torchvision.ops.nms(cb, cs, 0.5))
    assert torch.equal(keep.cpu(), ops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("name", ["nms_rotated.npz", "nms_rotated_clusters.npz"])
def test_nms_rotated_golden(name: str) -> None:
    z = _golden(name)
    boxes, scores, idxs = (torch.from_numpy(z[k]).to(CUDA) for k in ("boxes", "scores", "idxs"))
    thresholds = [float(k[5:]) for k in z if k.startswith("keep_") and "f64" not in k]
    assert thresholds
    for thr in thresholds:
        np.testing.assert_array_equal(ops.nms_rotated(boxes, scores, thr).cpu().numpy(), z[f"keep_{thr}"])
        np.testing.assert_array_equal(
            ops.batched_nms_rotated(boxes, scores, idxs, thr).cpu().numpy(), z[f"batched_keep_{thr}"]
        )
    if "boxes_f64" in z:
        b64 = torch.from_numpy(z["boxes_f64"]).to(CUDA)
        np.testing.assert_array_equal(
            ops.nms_rotated(b64, scores.double(), 0.5).cpu().numpy(), z["keep_f64_0.5"]
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_rotated_matches_cpu(dtype: torch.dtype) -> None:
    g = _gen(4)
    for n in (0, 1, 130):
        boxes, scores = _rotated(n, g, dtype), torch.rand(n, generator=g, dtype=dtype)
        idxs = torch.randint(0, 3, (n,), generator=g)
        cb, cs, ci = _cuda(boxes, scores, idxs)
        for thr in (0.0, 0.2, 0.5, 0.8):
            assert torch.equal(ops.nms_rotated(cb, cs, thr).cpu(), ops.nms_rotated(boxes, scores, thr))
            assert torch.equal(
                ops.batched_nms_rotated(cb, cs, ci, thr).cpu(),
                ops.batched_nms_rotated(boxes, scores, idxs, thr),
            )


# ---------------------------------------------------------------------------------------------- IoU


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_box_iou_matches_cpu_and_torchvision(dtype: torch.dtype) -> None:
    g = _gen(5)
    for n, m in ((0, 3), (3, 0), (1, 1), (45, 70), (300, 33)):
        a, b = _boxes(n, g, dtype=dtype), _boxes(m, g, dtype=dtype)
        if n > 2 and m > 2:
            a[0, 2:] = a[0, :2]  # zero area: IoU 0, not NaN
            b[1] = a[1]  # identical: IoU 1
        iou = ops.box_iou(*_cuda(a, b))
        _close(iou, ops.box_iou(a, b), atol=1e-6 if dtype != torch.float16 else 1e-3)
        if dtype != torch.float16 and n > 2 and m > 2:
            ref = torchvision.ops.box_iou(*_cuda(a, b))
            finite = torch.isfinite(ref)
            torch.testing.assert_close(iou[finite], ref[finite], atol=1e-6, rtol=0)
            assert (iou[0] == 0).all() and iou[1, 1] == 1


def test_box_iou_rotated_golden_and_cpu() -> None:
    z = _golden("box_iou_rotated.npz")
    a, b = torch.from_numpy(z["boxes1"]), torch.from_numpy(z["boxes2"])
    iou = ops.box_iou_rotated(*_cuda(a, b))
    np.testing.assert_allclose(iou.cpu().numpy(), z["iou"], atol=1e-5, rtol=0)
    _close(iou, ops.box_iou_rotated(a, b), atol=1e-6)
    e = _golden("box_iou_rotated_edge.npz")
    for ka, kb, kiou in (("pairs_a", "pairs_b", "pairs_iou_matrix"), ("random_a", "random_b", "random_iou")):
        a, b = torch.from_numpy(e[ka]), torch.from_numpy(e[kb])
        for dtype in (torch.float32, torch.float64):
            iou = ops.box_iou_rotated(*_cuda(a.to(dtype), b.to(dtype)))
            np.testing.assert_allclose(iou.cpu().numpy(), e[kiou], atol=1e-5, rtol=0)
            _close(iou, ops.box_iou_rotated(a.to(dtype), b.to(dtype)), atol=1e-6)
    pairs = torch.from_numpy(e["pairs_a"])
    assert list(ops.box_iou_rotated(*_cuda(torch.zeros(0, 5), pairs)).shape) == list(e["empty_iou_shape"])


# ---------------------------------------------------------------------------------------------- RoIAlign / RoIPool


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
def test_roi_align_forward_backward(dtype: torch.dtype, aligned: bool, sampling_ratio: int) -> None:
    g = _gen(6)
    x = torch.rand(2, 3, 13, 17, generator=g, dtype=dtype)
    rois = _rois(12, 2, g, 40.0, dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    for scale, (ph, pw) in ((0.25, (5, 4)), (0.5, (7, 7))):
        args = (scale, ph, pw, sampling_ratio, aligned)
        out = ops.roi_align(*_cuda(x, rois), *args)
        _close(out, ops.roi_align(x, rois, *args), atol)
        ref = torchvision.ops.roi_align(*_cuda(x, rois), (ph, pw), scale, sampling_ratio, aligned)
        torch.testing.assert_close(out, ref, atol=atol, rtol=0)
        grad = torch.rand(out.shape, generator=g, dtype=dtype)
        bargs = (scale, ph, pw, 2, 3, 13, 17, sampling_ratio, aligned)
        gi = ops._roi_align_backward(*_cuda(grad, rois), *bargs)
        _close(gi, ops._roi_align_backward(grad, rois, *bargs), atol * 10)
        xc = x.to(CUDA).requires_grad_()
        torchvision.ops.roi_align(xc, rois.to(CUDA), (ph, pw), scale, sampling_ratio, aligned).backward(
            grad.to(CUDA)
        )
        torch.testing.assert_close(gi, xc.grad, atol=atol * 10, rtol=0)


def test_roi_align_half_empty_and_autograd() -> None:
    g = _gen(7)
    x = torch.rand(2, 4, 9, 11, generator=g)
    rois = _rois(6, 2, g, 30.0, torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        out = ops.roi_align(x.to(dtype).to(CUDA), rois.to(dtype).to(CUDA), 0.5, 3, 3, 2, True)
        assert out.dtype == dtype
        _close(out, ops.roi_align(x.to(dtype), rois.to(dtype), 0.5, 3, 3, 2, True), atol=1e-2)
    empty = ops.roi_align(*_cuda(x, rois[:0]), 0.5, 3, 3, 2, True)
    assert empty.shape == (0, 4, 3, 3) and empty.device.type == "cuda"
    xd = x.double().to(CUDA).requires_grad_()
    rd = rois.double().to(CUDA)
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, rd, 0.5, 3, 2, 2, True), (xd,))
    # Through the op's autograd registration: the same gradient as on the CPU.
    xs = x.double().requires_grad_()
    ops.roi_align(xs, rois.double(), 0.5, 3, 2, 2, True).sum().backward()
    ops.roi_align(xd, rd, 0.5, 3, 2, 2, True).sum().backward()
    _close(xd.grad, xs.grad, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_pool_forward_backward(dtype: torch.dtype) -> None:
    g = _gen(8)
    x = torch.rand(2, 3, 13, 17, generator=g, dtype=dtype)
    rois = _rois(12, 2, g, 40.0, dtype)
    for scale, (ph, pw) in ((0.5, (4, 3)), (1.0, (7, 7))):
        out, argmax = ops.roi_pool(*_cuda(x, rois), scale, ph, pw)
        cpu_out, cpu_argmax = ops.roi_pool(x, rois, scale, ph, pw)
        _close(out, cpu_out, atol=0)
        assert torch.equal(argmax.cpu(), cpu_argmax)
        torch.testing.assert_close(
            out, torchvision.ops.roi_pool(*_cuda(x, rois), (ph, pw), scale), atol=0, rtol=0
        )
        grad = torch.rand(out.shape, generator=g, dtype=dtype)
        bargs = (scale, ph, pw, 2, 3, 13, 17)
        gi = ops._roi_pool_backward(*_cuda(grad, rois, cpu_argmax), *bargs)
        _close(gi, ops._roi_pool_backward(grad, rois, cpu_argmax, *bargs), atol=1e-6)
        xc = x.to(CUDA).requires_grad_()
        torchvision.ops.roi_pool(xc, rois.to(CUDA), (ph, pw), scale).backward(grad.to(CUDA))
        torch.testing.assert_close(gi, xc.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "name",
    [
        "roi_align_rotated_f32.npz",
        "roi_align_rotated_f64.npz",
        "roi_align_rotated_edge_f32.npz",
        "roi_align_rotated_edge_f64.npz",
    ],
)
def test_roi_align_rotated_golden_and_cpu(name: str) -> None:
    z = _golden(name)
    x = torch.from_numpy(z["input"])
    atol = 1e-5 if x.dtype == torch.float32 else 1e-10
    settings = [k for k in z if k.startswith("out") and k.count("_") == 2]
    assert settings
    for key in settings:
        size, scale, sr = key.split("_")
        ph, pw = (int(v) for v in size[3:].split("x"))
        scale, sr = float(scale[5:]), int(sr[2:])
        rois = torch.from_numpy(z[f"{key}_rois"] if f"{key}_rois" in z else z["rois"])
        out = ops.roi_align_rotated(*_cuda(x, rois), scale, ph, pw, sr)
        np.testing.assert_allclose(out.cpu().numpy(), z[key], atol=atol, rtol=0)
        _close(out, ops.roi_align_rotated(x, rois, scale, ph, pw, sr), atol)
        grad = torch.from_numpy(z[f"{key}_grad_output"])
        bargs = (scale, ph, pw, *x.shape, sr)
        gi = ops._roi_align_rotated_backward(*_cuda(grad, rois), *bargs)
        np.testing.assert_allclose(gi.cpu().numpy(), z[f"{key}_grad_input"], atol=atol * 10, rtol=0)
        _close(gi, ops._roi_align_rotated_backward(grad, rois, *bargs), atol * 10)


def test_roi_image_index_out_of_range_pools_zeros() -> None:
    # The custom ops are called directly (no argument validation): the kernels must not read or write
    # outside the feature map, and give zeros.
    g = _gen(14)
    x = torch.rand(2, 3, 8, 8, generator=g, device="cpu").to(CUDA)
    rois = torch.tensor([[5.0, 1, 1, 6, 6], [-1.0, 1, 1, 6, 6], [1.0, 1, 1, 6, 6]], device=CUDA)
    rotated = torch.tensor([[5.0, 4, 4, 3, 3, 30], [1.0, 4, 4, 3, 3, 30]], device=CUDA)
    out = ops.roi_align(x, rois, 1.0, 2, 2, 2, True)
    assert (out[:2] == 0).all() and (out[2] != 0).any()
    pooled, argmax = ops.roi_pool(x, rois, 1.0, 2, 2)
    assert (pooled[:2] == 0).all() and (argmax[:2] == -1).all() and (argmax[2] >= 0).all()
    rout = ops.roi_align_rotated(x, rotated, 1.0, 2, 2, 2)
    assert (rout[0] == 0).all() and (rout[1] != 0).any()
    gi = ops._roi_align_backward(torch.ones_like(out), rois, 1.0, 2, 2, 2, 3, 8, 8, 2, True)
    gr = ops._roi_align_rotated_backward(torch.ones_like(rout), rotated, 1.0, 2, 2, 2, 3, 8, 8, 2)
    assert gi[0].sum() == 0 and gi[1].sum() > 0 and gr[0].sum() == 0 and gr[1].sum() > 0
    torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- deform_conv2d

DEFORM_CASES = [
    # batch, C_in, H, W, C_out, kh, kw, stride, pad, dilation, groups, offset_groups, use_mask
    (2, 4, 7, 9, 6, 3, 3, 1, 1, 1, 2, 2, True),
    (3, 2, 6, 5, 4, 2, 3, 2, 0, 2, 1, 1, False),
    (1, 6, 8, 8, 3, 3, 3, 1, 2, 1, 1, 3, True),
    (0, 2, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", DEFORM_CASES)
def test_deform_conv2d_forward_backward(dtype: torch.dtype, case: tuple) -> None:
    b, c, h, w, oc, kh, kw, st, pd, dl, groups, og, use_mask = case
    g = _gen(9)
    oh = (h + 2 * pd - (dl * (kh - 1) + 1)) // st + 1
    ow = (w + 2 * pd - (dl * (kw - 1) + 1)) // st + 1
    x = torch.rand(b, c, h, w, generator=g, dtype=dtype)
    weight = torch.rand(oc, c // groups, kh, kw, generator=g, dtype=dtype) - 0.5
    offset = (torch.rand(b, 2 * og * kh * kw, oh, ow, generator=g, dtype=dtype) - 0.5) * 6  # some go outside
    mask = (
        torch.rand(b, og * kh * kw, oh, ow, generator=g, dtype=dtype)
        if use_mask
        else torch.zeros(0, dtype=dtype)
    )
    bias = torch.rand(oc, generator=g, dtype=dtype)
    ints = (st, st, pd, pd, dl, dl, groups, og, use_mask)
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    out = ops.deform_conv2d(*_cuda(x, weight, offset, mask, bias), *ints)
    _close(out, ops.deform_conv2d(x, weight, offset, mask, bias, *ints), atol)
    grad = torch.rand(out.shape, generator=g, dtype=dtype)
    grads = ops._deform_conv2d_backward(*_cuda(grad, x, weight, offset, mask, bias), *ints)
    cpu_grads = ops._deform_conv2d_backward(grad, x, weight, offset, mask, bias, *ints)
    for name, got, want in zip(("input", "weight", "offset", "mask", "bias"), grads, cpu_grads):
        assert got.shape == want.shape, name
        _close(got, want, atol * 10)
    if b == 0:  # torchvision is not asked about empty batches
        return
    cx, cw, co, cm, cb = _cuda(x, weight, offset, mask, bias)
    ref = torchvision.ops.deform_conv2d(
        cx, co, cw, cb, (st, st), (pd, pd), (dl, dl), cm if use_mask else None
    )
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    leaves = [t.clone().requires_grad_() for t in (cx, cw, co, cm, cb)]
    torchvision.ops.deform_conv2d(
        leaves[0],
        leaves[2],
        leaves[1],
        leaves[4],
        (st, st),
        (pd, pd),
        (dl, dl),
        leaves[3] if use_mask else None,
    ).backward(grad.to(CUDA))
    for i, (got, leaf) in enumerate(zip(grads, leaves)):
        if i == 3 and not use_mask:
            continue
        want = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        torch.testing.assert_close(got, want, atol=atol * 10, rtol=0)


def test_deform_conv2d_chunks_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from detcore.ops_cuda import kernels

    g = _gen(10)
    x = torch.rand(5, 2, 6, 6, generator=g, dtype=torch.float64, device="cpu")
    weight = torch.rand(3, 2, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.rand(5, 18, 6, 6, generator=g, dtype=torch.float64) - 0.5
    mask = torch.rand(5, 9, 6, 6, generator=g, dtype=torch.float64)
    bias = torch.zeros(3, dtype=torch.float64)
    args = (*_cuda(x, weight, offset, mask, bias), 1, 1, 1, 1, 1, 1, 1, 1, True)
    whole = ops.deform_conv2d(*args)
    whole_grads = ops._deform_conv2d_backward(torch.ones_like(whole), *args)
    monkeypatch.setattr(kernels, "_DEFORM_COLUMNS_BUDGET", 1)  # one image per chunk
    torch.testing.assert_close(ops.deform_conv2d(*args), whole, atol=1e-12, rtol=0)
    for got, want in zip(ops._deform_conv2d_backward(torch.ones_like(whole), *args), whole_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- paste masks


def test_paste_masks_golden_bit_exact() -> None:
    z = _golden("paste_masks_in_image.npz")
    h, w = (int(v) for v in z["image_shape"])
    masks, boxes = _cuda(torch.from_numpy(z["masks"]), torch.from_numpy(z["boxes"]))
    for thr, key in ((0.5, "pasted_threshold_0.5"), (0.3, "pasted_threshold_0.3"), (-1.0, "pasted_soft")):
        out = ops.paste_masks_in_image(masks, boxes, h, w, thr)
        assert out.dtype == (torch.bool if thr >= 0 else torch.uint8)
        np.testing.assert_array_equal(out.cpu().numpy().astype(np.uint8), z[key])
    e = _golden("paste_masks_in_image_edge.npz")
    h, w = (int(v) for v in e["image_shape"])
    boxes = torch.from_numpy(e["boxes"]).to(CUDA)
    checked = 0
    for mkey in ("masks28", "masks14", "disc28"):
        masks = torch.from_numpy(e[mkey]).to(CUDA)
        for suffix, thr in (("_pasted_threshold_0.5", 0.5), ("_pasted_soft", -1.0)):
            if mkey + suffix in e:
                out = ops.paste_masks_in_image(masks, boxes, h, w, thr)
                np.testing.assert_array_equal(out.cpu().numpy().astype(np.uint8), e[mkey + suffix])
                checked += 1
    assert checked == 5
    empty = ops.paste_masks_in_image(masks[:0], boxes[:0], h, w, 0.5)
    assert list(empty.shape) == list(e["empty_pasted_shape"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_paste_masks_matches_cpu(dtype: torch.dtype) -> None:
    g = _gen(11)
    masks = torch.rand(9, 20, 16, generator=g).to(dtype)
    boxes = _boxes(9, g, scale=80.0)
    boxes[0] = torch.tensor([-30.0, -20.0, -5.0, -2.0])  # entirely outside: all zero
    boxes[1] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero width
    boxes[2] = torch.tensor([-10.0, 5.0, 200.0, 50.5])  # wider than the image
    for thr in (0.5, 0.0, -1.0):
        out = ops.paste_masks_in_image(*_cuda(masks, boxes), 70, 90, thr)
        cpu = ops.paste_masks_in_image(masks, boxes, 70, 90, thr)
        assert out.dtype == cpu.dtype and torch.equal(out.cpu(), cpu)
    assert not ops.paste_masks_in_image(*_cuda(masks, boxes), 70, 90, 0.5)[0].any()


# ---------------------------------------------------------------------------------------------- devices and streams


def test_kernels_run_on_the_current_stream() -> None:
    g = _gen(12)
    x = torch.rand(2, 3, 32, 32, generator=g)
    rois = _rois(50, 2, g, 100.0, torch.float32)
    expected = ops.roi_align(x, rois, 0.25, 7, 7, 2, True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        cx, cr = _cuda(x, rois)
        out = ops.roi_align(cx, cr, 0.25, 7, 7, 2, True)
        keep = ops.nms(cr[:, 1:], torch.rand(50, device=CUDA), 0.5)
    stream.synchronize()
    _close(out, expected, atol=1e-5)
    assert keep.numel() > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device() -> None:
    g = _gen(13)
    boxes, scores = _boxes(200, g), torch.rand(200, generator=g)
    dev = torch.device("cuda", 1)
    keep = ops.nms(boxes.to(dev), scores.to(dev), 0.5)
    assert keep.device == dev and torch.equal(keep.cpu(), ops.nms(boxes, scores, 0.5))
