"""detcore's CUDA kernels (detcore-ops-cuda) vs torchvision's CUDA ops on the same inputs, same process.

Does nothing without a CUDA GPU. Times are medians of a few repeats, each bracketed by
``torch.cuda.synchronize()``; the detcore op is called through ``torch.ops.detcore`` (the custom op, so
the dispatch overhead is included).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["run"]


def _median_seconds(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _boxes(n: int, g: torch.Generator, scale: float, device: torch.device) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 8 + 1
    return torch.cat([xy, xy + wh], 1).to(device)


def run(report) -> None:
    if not torch.cuda.is_available():
        return
    import torchvision

    import detcore.ops  # noqa: F401  (registers torch.ops.detcore.*)

    ops = torch.ops.detcore
    tv = torchvision.ops
    dev = torch.device("cuda")
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)

    # NMS: RPN-like (many overlapping proposals) and per-class detection NMS.
    for n in (2000, 12000):
        boxes, scores = _boxes(n, g, 1000.0, dev), torch.rand(n, generator=g).to(dev)
        idxs = torch.randint(0, 80, (n,), generator=g).to(dev)
        report(
            f"nms cuda, {n} boxes, thr 0.7",
            _median_seconds(lambda b=boxes, s=scores: ops.nms(b, s, 0.7)),
            _median_seconds(lambda b=boxes, s=scores: tv.nms(b, s, 0.7)),
            "torchvision.ops.nms (cuda)",
        )
        report(
            f"batched_nms cuda, {n} boxes, 80 classes, thr 0.5",
            _median_seconds(lambda b=boxes, s=scores, i=idxs: ops.batched_nms(b, s, i, 0.5)),
            _median_seconds(lambda b=boxes, s=scores, i=idxs: tv.batched_nms(b, s, i, 0.5)),
            "torchvision.ops.batched_nms (cuda)",
            "detcore is exact per class (no coordinate offset)",
        )

    a, b = _boxes(2000, g, 1000.0, dev), _boxes(3000, g, 1000.0, dev)
    report(
        "box_iou cuda, 2000 x 3000",
        _median_seconds(lambda: ops.box_iou(a, b)),
        _median_seconds(lambda: tv.box_iou(a, b)),
        "torchvision.ops.box_iou (cuda)",
    )

    # RoIAlign / RoIPool: FPN level P2 of a 2-image batch, 512 RoIs per image.
    feats = torch.randn(2, 256, 200, 304, generator=g).to(dev)
    k = 1024
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), _boxes(k, g, 1200.0, "cpu")], 1).to(
        dev
    )
    report(
        "roi_align cuda fwd, 2x256x200x304, 1024 RoIs, 7x7, sr 0, aligned",
        _median_seconds(lambda: ops.roi_align(feats, rois, 0.25, 7, 7, 0, True)),
        _median_seconds(lambda: tv.roi_align(feats, rois, (7, 7), 0.25, 0, True)),
        "torchvision.ops.roi_align (cuda)",
    )
    grad = torch.randn(k, 256, 7, 7, generator=g).to(dev)
    tv_in = feats.clone().requires_grad_()
    tv_out = tv.roi_align(tv_in, rois, (7, 7), 0.25, 0, True)
    report(
        "roi_align cuda bwd, same shapes",
        _median_seconds(lambda: ops._roi_align_backward(grad, rois, 0.25, 7, 7, 2, 256, 200, 304, 0, True)),
        _median_seconds(lambda: torch.autograd.grad(tv_out, tv_in, grad, retain_graph=True)),
        "torchvision.ops.roi_align backward (cuda)",
    )
    report(
        "roi_pool cuda fwd, same shapes, 7x7",
        _median_seconds(lambda: ops.roi_pool(feats, rois, 0.25, 7, 7)),
        _median_seconds(lambda: tv.roi_pool(feats, rois, (7, 7), 0.25)),
        "torchvision.ops.roi_pool (cuda)",
    )

    # Deformable convolution v2, a ResNet stage-3 sized layer.
    x = torch.randn(2, 256, 64, 96, generator=g).to(dev)
    weight = (torch.randn(256, 256, 3, 3, generator=g) * 0.02).to(dev)
    bias = torch.zeros(256, device=dev)
    offset = (torch.randn(2, 18, 64, 96, generator=g) * 1.5).to(dev)
    mask = torch.rand(2, 9, 64, 96, generator=g).to(dev)
    ints = (1, 1, 1, 1, 1, 1, 1, 1, True)
    report(
        "deform_conv2d cuda fwd, 2x256x64x96, 256->256 3x3, DCNv2",
        _median_seconds(lambda: ops.deform_conv2d(x, weight, offset, mask, bias, *ints)),
        _median_seconds(lambda: tv.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)),
        "torchvision.ops.deform_conv2d (cuda)",
    )
    gout = torch.randn(2, 256, 64, 96, generator=g).to(dev)
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]
    tv_y = tv.deform_conv2d(leaves[0], leaves[1], leaves[2], leaves[3], padding=1, mask=leaves[4])
    report(
        "deform_conv2d cuda bwd, same shapes",
        _median_seconds(lambda: ops._deform_conv2d_backward(gout, x, weight, offset, mask, bias, *ints)),
        _median_seconds(lambda: torch.autograd.grad(tv_y, leaves, gout, retain_graph=True)),
        "torchvision.ops.deform_conv2d backward (cuda)",
    )
