"""ROI pooling ops on CPU (2 threads): detcore vs torchvision on the same inputs, in the same process.

Inputs: a 2x256x200x336 float32 feature map (stride 4 of a 1344x800 image), 1,024 boxes with corners
uniform in the image and sizes uniform in [0, 128) px (clipped to the image), random image index,
spatial_scale 0.25, 7x7 output, sampling_ratio 0 (adaptive), aligned=True; seed 0.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["run"]


def _paired_medians(ours: Callable[[], object], reference: Callable[[], object], repeats: int = 3):
    """Median seconds of each, measured alternately (after one warm-up each) so drifting machine load
    affects both alike."""
    ours()
    reference()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((ours, a), (reference, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def _inputs(seed: int = 0, k: int = 1024):
    g = torch.Generator().manual_seed(seed)
    feature = torch.randn(2, 256, 200, 336, generator=g)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([1344.0, 800.0])
    wh = torch.rand(k, 2, generator=g) * 128
    x2y2 = torch.minimum(xy + wh, torch.tensor([1344.0, 800.0]))
    batch = torch.randint(0, 2, (k, 1), generator=g).float()
    rois = torch.cat([batch, xy, x2y2], 1)
    angles = torch.rand(k, 1, generator=g) * 360 - 180
    return feature, rois, angles


def run(report) -> None:
    import torchvision

    from detcore.ops import roi_align, roi_align_rotated, roi_pool

    torch.set_num_threads(2)
    feature, rois, angles = _inputs()
    out_size, scale, ratio = (7, 7), 0.25, 0

    ours, ref = _paired_medians(
        lambda: roi_align(feature, rois, out_size, scale, ratio, True),
        lambda: torchvision.ops.roi_align(feature, rois, out_size, scale, ratio, True),
    )
    report("roi_align forward (1024 boxes, 2x256x200x336, 7x7)", ours, ref, "torchvision.ops.roi_align")

    grad = torch.randn(rois.shape[0], 256, 7, 7, generator=torch.Generator().manual_seed(1))

    def fwd_bwd(fn):
        x = feature.detach().requires_grad_()
        fn(x, rois, out_size, scale, ratio, True).backward(grad)

    ours, ref = _paired_medians(lambda: fwd_bwd(roi_align), lambda: fwd_bwd(torchvision.ops.roi_align))
    report("roi_align forward+backward (same inputs)", ours, ref, "torchvision.ops.roi_align")

    ours, ref = _paired_medians(
        lambda: roi_pool(feature, rois, out_size, scale),
        lambda: torchvision.ops.roi_pool(feature, rois, out_size, scale),
    )
    report("roi_pool forward (same inputs)", ours, ref, "torchvision.ops.roi_pool")

    # The same boxes as (cx, cy, w, h, angle): angle 0 covers exactly what roi_align(aligned=True) samples.
    xyxy = rois[:, 1:]
    rotated = torch.cat(
        [rois[:, :1], (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], 0 * angles], 1
    )

    def same_boxes():
        return roi_align(feature, rois, out_size, scale, ratio, True)

    ours, ref = _paired_medians(
        lambda: roi_align_rotated(feature, rotated, out_size, scale, ratio), same_boxes, 5
    )
    report("roi_align_rotated forward, angle 0", ours, ref, "detcore roi_align (same boxes)")
    rotated_random = rotated.clone()
    rotated_random[:, 5:] = angles
    ours, ref = _paired_medians(
        lambda: roi_align_rotated(feature, rotated_random, out_size, scale, ratio), same_boxes, 5
    )
    report(
        "roi_align_rotated forward, random angles",
        ours,
        ref,
        "detcore roi_align (same boxes)",
        "general rotated sampling (not separable); angle 0 takes the separable path",
    )


if __name__ == "__main__":

    def _print(name, detcore_seconds, reference_seconds, reference_name, note=""):
        ratio = reference_seconds / detcore_seconds
        print(
            f"{name}: detcore {detcore_seconds:.4f}s, {reference_name} {reference_seconds:.4f}s, x{ratio:.2f} {note}"
        )

    run(_print)
