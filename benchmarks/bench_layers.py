"""detcore.ops layers and losses vs torchvision / plain PyTorch on the same inputs (CPU).

The losses use the same formulas as torchvision's, so ratios near 1 are expected; the point is to catch a
slow path (extra copies, Python loops). ``fold_frozen_bn_into_conv`` is measured against conv + frozen BN.
``conv3x3_winograd`` (Winograd F(4x4, 3x3), the path ``optimize_for_inference`` takes for wide 3x3 convs) is
measured against oneDNN's fused direct conv + bias + ReLU on channels-last inputs, the path it replaces, at
the shapes of an 800x1333 R-50-FPN detector.
"""

from __future__ import annotations

import torch
import torchvision.ops as tvo
from _timing import interleaved_medians
from torch import nn

from detcore.ops import (
    Conv2d,
    FrozenBatchNorm2d,
    ciou_loss,
    conv3x3_winograd,
    diou_loss,
    fold_frozen_bn_into_conv,
    giou_loss,
    sigmoid_focal_loss,
    winograd_weight,
)


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 500
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 200 + 1], dim=1)


def run(report) -> None:
    torch.set_num_threads(2)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(20000, 80, generator=g)
        targets = (torch.rand(20000, 80, generator=g) > 0.99).float()
        report(
            "sigmoid_focal_loss [20000, 80] sum",
            *interleaved_medians(
                lambda: sigmoid_focal_loss(logits, targets, reduction="sum"),
                lambda: tvo.sigmoid_focal_loss(logits, targets, reduction="sum"),
            ),
            "torchvision.ops.sigmoid_focal_loss",
        )
        b1, b2 = _boxes(200000, 1), _boxes(200000, 2)
        for name, ours, ref in [
            ("giou_loss", giou_loss, tvo.generalized_box_iou_loss),
            ("diou_loss", diou_loss, tvo.distance_box_iou_loss),
            ("ciou_loss", ciou_loss, tvo.complete_box_iou_loss),
        ]:
            report(
                f"{name} [200000, 4] sum",
                *interleaved_medians(
                    lambda ours=ours: ours(b1, b2, reduction="sum"),
                    lambda ref=ref: ref(b1, b2, reduction="sum"),
                ),
                f"torchvision.ops.{ref.__name__}",
            )

        x = torch.randn(8, 256, 64, 64, generator=g)
        frozen = FrozenBatchNorm2d(256)
        bn = nn.BatchNorm2d(256).eval()
        report(
            "FrozenBatchNorm2d [8, 256, 64, 64] inference",
            *interleaved_medians(lambda: frozen(x), lambda: bn(x)),
            "torch.nn.BatchNorm2d (eval)",
        )

        x = torch.randn(1, 64, 128, 128, generator=g)
        conv = Conv2d(
            64, 64, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(64), activation=torch.relu
        ).eval()
        fused = fold_frozen_bn_into_conv(conv, conv.norm)
        report(
            "conv3x3+FrozenBN+ReLU folded [1, 64, 128, 128]",
            *interleaved_medians(lambda: fused(x), lambda: conv(x)),
            "detcore Conv2d with FrozenBN (unfolded)",
        )

        # Winograd F(4x4, 3x3) vs oneDNN direct conv (+ bias + ReLU), channels-last, float32
        for name, (n, c, co, h, w) in [
            ("FPN/RetinaNet head P3 256->256", (1, 256, 256, 100, 167)),
            ("RetinaNet cls_score P3 256->720", (1, 256, 720, 100, 167)),
            ("RPN head P2 256->256", (1, 256, 256, 200, 334)),
            ("ResNet res4 conv2 256->256", (1, 256, 256, 50, 84)),
            ("mask head 100 RoIs 256->256", (100, 256, 256, 14, 14)),
        ]:
            x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
            weight = (torch.randn(co, c, 3, 3, generator=g) * 0.03).contiguous(
                memory_format=torch.channels_last
            )
            bias = torch.randn(co, generator=g)
            u = winograd_weight(weight)

            def direct(x=x, weight=weight, bias=bias):
                return torch.ops.mkldnn._convolution_pointwise(
                    x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], ""
                )

            report(
                f"conv3x3_winograd {name} [{n}, {c}, {h}, {w}]",
                *interleaved_medians(lambda x=x, u=u, bias=bias: conv3x3_winograd(x, u, bias, True), direct),
                "oneDNN conv+bias+ReLU (channels-last)",
            )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(
            f"{name:50s} detcore {ours * 1e3:8.2f} ms  {ref_name} {ref * 1e3:8.2f} ms  speed-up {ref / ours:5.2f}x"
        )

    run(_print)
