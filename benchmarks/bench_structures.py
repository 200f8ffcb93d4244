"""detcore.structures: pairwise_iou vs torchvision.ops.box_iou; ImageList.from_tensors vs a bare copy.

Run through ``benchmarks/run.py`` (``run(report)``) or directly: ``python benchmarks/bench_structures.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from detcore.structures import Boxes, ImageList, pairwise_iou

REPEATS = 9


def _time(fn: Callable[[], object]) -> float:
    fn()  # warm up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_pair(a: Callable[[], object], b: Callable[[], object]) -> tuple[float, float]:
    """Median times of a and b, interleaved so that load on a shared machine hits both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 1200
    wh = torch.rand(n, 2, generator=g) * 300 + 1
    return torch.cat([xy, xy + wh], dim=1)


def run(report) -> None:
    import torchvision

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    # the seed's example: 255,780 anchors of an 800x1333 image vs 20 ground-truth boxes
    anchors = Boxes(_random_boxes(255_780, g))
    gt = Boxes(_random_boxes(20, g))
    t_d, t_r = _time_pair(
        lambda: pairwise_iou(gt, anchors), lambda: torchvision.ops.box_iou(gt.tensor, anchors.tensor)
    )
    report("pairwise_iou 20 gt x 255,780 anchors (RPN matching)", t_d, t_r, "torchvision.ops.box_iou")
    t_d, t_r = _time_pair(
        lambda: pairwise_iou(anchors, gt), lambda: torchvision.ops.box_iou(anchors.tensor, gt.tensor)
    )
    report("pairwise_iou 255,780 anchors x 20 gt", t_d, t_r, "torchvision.ops.box_iou")

    # ImageList: 8 images around 800x1333, sizes varying (seed 0), padded to multiples of 32
    sizes = [
        (int(torch.randint(720, 801, (1,), generator=g)), int(torch.randint(1100, 1334, (1,), generator=g)))
        for _ in range(8)
    ]
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    max_h = (max(h for h, _ in sizes) + 31) // 32 * 32
    max_w = (max(w for _, w in sizes) + 31) // 32 * 32

    def copy_reference():
        out = images[0].new_full((8, 3, max_h, max_w), 0.0)
        for i, im in enumerate(images):
            out[i, :, : im.shape[1], : im.shape[2]].copy_(im)
        return out

    t_d, t_r = _time_pair(lambda: ImageList.from_tensors(images, size_divisibility=32), copy_reference)
    report(
        "ImageList.from_tensors 8 images ~800x1333, size_divisibility=32",
        t_d,
        t_r,
        "copy into preallocated tensor",
        note=f"padded to {max_h}x{max_w}",
    )


if __name__ == "__main__":

    def _print(name, d, r, ref, note=""):
        print(f"{name}: detcore {d * 1e3:.2f} ms, {ref} {r * 1e3:.2f} ms, speed-up x{r / d:.2f} {note}")

    run(_print)
