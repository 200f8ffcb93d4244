"""RPN inference (eval, CPU, 1 image 800x1280, FPN p2..p6 with 256 channels): detcore vs torchvision.

Both RPNs have the same sizes: anchors 32/64/128/256/512 on p2..p6 with aspect ratios 0.5/1/2, pre- and
post-NMS top-n 1000, NMS 0.7, and the same random head weights (torchvision's
``models.detection.rpn.RegionProposalNetwork`` with ``RPNHead(256, 3)``).

Rows:
- ``rpn_proposals``: the proposal part alone (anchors, decoding, per-level top-k, clipping, small-box removal,
  per-level NMS, top-n), with the head replaced by a module returning precomputed head outputs in both.
- ``rpn_forward``: the whole RPN forward, head convolutions included (the 3x3 256->256 conv on p2 dominates
  and is the same torch convolution in both).

Timings alternate between the two implementations (median of repeats) so that machine load affects both
alike. torchvision computes a level's stride as ``image_size // feature_size`` (61 instead of 64 on p6 for
800 rows), so its p6 anchors differ slightly; that does not change the work done.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from _timing import interleaved_medians
from torch import nn

__all__ = ["run"]

LEVELS = ["p2", "p3", "p4", "p5", "p6"]


class _FixedHead(nn.Module):
    """Returns precomputed head outputs (to time the proposal part alone)."""

    def __init__(self, logits: list[torch.Tensor], deltas: list[torch.Tensor]) -> None:
        super().__init__()
        self.logits = logits
        self.deltas = deltas

    def forward(self, features):
        return self.logits, self.deltas


def _build(height: int, width: int, channels: int):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList as TVImageList
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

    from detcore.heads import RPN, RPNConfig
    from detcore.ops import ShapeSpec
    from detcore.structures import ImageList

    torch.manual_seed(0)
    shapes = {f"p{i}": ShapeSpec(channels=channels, stride=2**i) for i in range(2, 7)}
    ours = RPN.build(RPNConfig.base_rcnn_fpn(), shapes).eval()
    # random (not near-zero) head weights so that the logits are spread out
    for p in ours.rpn_head.parameters():
        nn.init.normal_(p, std=0.05)

    tv_head = RPNHead(channels, 3)
    with torch.no_grad():
        tv_head.conv[0][0].weight.copy_(ours.rpn_head.conv.weight)
        tv_head.conv[0][0].bias.copy_(ours.rpn_head.conv.bias)
        tv_head.cls_logits.weight.copy_(ours.rpn_head.objectness_logits.weight)
        tv_head.cls_logits.bias.copy_(ours.rpn_head.objectness_logits.bias)
        tv_head.bbox_pred.weight.copy_(ours.rpn_head.anchor_deltas.weight)
        tv_head.bbox_pred.bias.copy_(ours.rpn_head.anchor_deltas.bias)
    anchor_gen = AnchorGenerator(
        sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5
    )
    theirs = RegionProposalNetwork(
        anchor_gen,
        tv_head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": 2000, "testing": 1000},
        post_nms_top_n={"training": 1000, "testing": 1000},
        nms_thresh=0.7,
    ).eval()

    gen = torch.Generator().manual_seed(1)
    feats = OrderedDict(
        (f"p{i}", torch.randn(1, channels, -(-height // 2**i), -(-width // 2**i), generator=gen))
        for i in range(2, 7)
    )
    images = ImageList(torch.zeros(1, 3, height, width), [(height, width)])
    tv_images = TVImageList(torch.zeros(1, 3, height, width), [(height, width)])
    return ours, theirs, feats, images, tv_images


def run(report, height: int = 800, width: int = 1280, channels: int = 256, repeats: int = 15) -> None:
    torch.set_num_threads(2)
    ours, theirs, feats, images, tv_images = _build(height, width, channels)
    shape = f"1 image {height}x{width}, p2..p6 x {channels} ch"
    with torch.no_grad():
        feat_list = [feats[k] for k in LEVELS]
        logits, deltas = ours.rpn_head(feat_list)
        head_ours, head_theirs = ours.rpn_head, theirs.head
        ours.rpn_head = _FixedHead(logits, deltas)
        theirs.head = _FixedHead(logits, deltas)
        t_ours, t_theirs = interleaved_medians(
            lambda: ours(images, feats), lambda: theirs(tv_images, feats), repeats
        )
        report(
            "rpn_proposals",
            t_ours,
            t_theirs,
            "torchvision RegionProposalNetwork",
            f"{shape}; anchors+decode+top-k+NMS, head outputs precomputed",
        )
        ours.rpn_head, theirs.head = head_ours, head_theirs
        t_ours, t_theirs = interleaved_medians(
            lambda: ours(images, feats), lambda: theirs(tv_images, feats), max(3, repeats // 2)
        )
        report(
            "rpn_forward",
            t_ours,
            t_theirs,
            "torchvision RegionProposalNetwork",
            f"{shape}; whole forward incl. the 3x3 head conv (same torch conv in both)",
        )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(
            f"{name}: detcore {ours * 1e3:.2f} ms, {ref_name} {ref * 1e3:.2f} ms, ratio {ref / ours:.2f}x  {note}"
        )

    run(_print)
