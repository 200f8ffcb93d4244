"""Box ops of detcore.ops (NMS, IoU, rotated NMS, mask pasting) against torchvision / pure PyTorch.

``run(report)`` calls ``report(name, detcore_seconds, reference_seconds, reference_name, note)`` per row;
every row times both sides in this process on the same inputs with 2 threads (median of a few repeats
after one warm-up). Run directly for a table: ``python benchmarks/bench_ops_boxes.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from _timing import interleaved_medians, median_seconds

from detcore.ops import batched_nms, box_iou, nms, nms_rotated, paste_masks_in_image

__all__ = ["run"]

IMAGE_W, IMAGE_H = 1333, 800


def _boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """XYXY boxes: top-left uniform in the 1333x800 image, width/height uniform in [10, 110]; distinct scores
    (a random permutation), so the kept order does not depend on how ties are broken."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([IMAGE_W, IMAGE_H])
    wh = 10 + torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + wh], dim=1), torch.randperm(n, generator=g).float() / n


def _paste_reference(
    masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int, threshold: float
) -> torch.Tensor:
    """detectron2's CPU paste in pure PyTorch: one grid_sample per box over its pixel extent."""
    out = torch.zeros(masks.shape[0], h, w, dtype=torch.bool)
    for i in range(masks.shape[0]):
        box = boxes[i : i + 1]
        x0_int, y0_int = torch.clamp(box.floor()[0, :2] - 1, min=0).to(torch.int32).tolist()
        x1_int = int(torch.clamp(box[0, 2].ceil() + 1, max=w))
        y1_int = int(torch.clamp(box[0, 3].ceil() + 1, max=h))
        if x1_int <= x0_int or y1_int <= y0_int:
            continue
        x0, y0, x1, y1 = torch.split(box, 1, dim=1)
        img_y = (torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        img_x = (torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
        gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
        grid = torch.stack([gx, gy], dim=3)
        pasted = F.grid_sample(masks[i : i + 1, None], grid, align_corners=False)[0, 0]
        out[i, y0_int:y1_int, x0_int:x1_int] = pasted >= threshold
    return out


def run(report) -> None:
    torch.set_num_threads(2)

    boxes, scores = _boxes(20_000, 0)
    assert torch.equal(nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))
    report(
        "nms, 20k random boxes, IoU 0.7",
        *interleaved_medians(
            lambda: nms(boxes, scores, 0.7), lambda: torchvision.ops.nms(boxes, scores, 0.7)
        ),
        "torchvision.ops.nms",
        "boxes: xy uniform in 1333x800, wh uniform 10..110, seed 0; identical output",
    )

    idxs = torch.randint(0, 80, (20_000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(
        batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    )
    report(
        "batched_nms, 20k boxes, 80 classes, IoU 0.5",
        *interleaved_medians(
            lambda: batched_nms(boxes, scores, idxs, 0.5),
            lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5),
        ),
        "torchvision.ops.batched_nms",
        "same boxes; identical output",
    )

    anchors, _ = _boxes(255_780, 2)
    gt, _ = _boxes(20, 3)
    report(
        "box_iou, 255,780 x 20 boxes",
        *interleaved_medians(lambda: box_iou(anchors, gt), lambda: torchvision.ops.box_iou(anchors, gt)),
        "torchvision.ops.box_iou",
        "anchors vs ground truth as in RPN matching; bit-identical where torchvision is finite",
    )

    g = torch.Generator().manual_seed(4)
    n = 5_000
    rboxes = torch.empty(n, 5)
    rboxes[:, 0] = torch.rand(n, generator=g) * IMAGE_W
    rboxes[:, 1] = torch.rand(n, generator=g) * IMAGE_H
    rboxes[:, 2:4] = 10 + torch.rand(n, 2, generator=g) * 100
    rboxes[:, 4] = torch.rand(n, generator=g) * 360 - 180
    rscores = torch.rand(n, generator=g)
    report(
        "nms_rotated, 5,000 random rotated boxes, IoU 0.7",
        median_seconds(lambda: nms_rotated(rboxes, rscores, 0.7)),
        10.7,
        "detectron2 (measured 10.7 s)",
        "target < 0.5 s; centres uniform in 1333x800, wh 10..110, angle uniform in [-180, 180)",
    )

    g = torch.Generator().manual_seed(5)
    masks = torch.rand(100, 28, 28, generator=g)
    xy = torch.rand(100, 2, generator=g) * torch.tensor([IMAGE_W - 50, IMAGE_H - 50])
    wh = 20 + torch.rand(100, 2, generator=g) * 280
    mboxes = torch.cat([xy, xy + wh], dim=1)
    assert torch.equal(
        paste_masks_in_image(masks, mboxes, (IMAGE_H, IMAGE_W), 0.5),
        _paste_reference(masks, mboxes, IMAGE_H, IMAGE_W, 0.5),
    )
    report(
        "paste_masks_in_image, 100 masks 28x28 into 800x1333",
        *interleaved_medians(
            lambda: paste_masks_in_image(masks, mboxes, (IMAGE_H, IMAGE_W), 0.5),
            lambda: _paste_reference(masks, mboxes, IMAGE_H, IMAGE_W, 0.5),
        ),
        "grid_sample per box (detectron2's CPU algorithm, pure PyTorch)",
        "boxes 20..300 px inside the image; identical output; both include allocating the 107 MB bool output "
        "(detcore: a lazily zeroed mapping, only pages under the boxes are written; reference: torch.zeros)",
    )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(
            f"{name:55s} detcore {ours * 1e3:9.2f} ms  {ref_name}: {ref * 1e3:9.2f} ms  x{ref / ours:6.2f}  {note}"
        )

    run(_print)
