"""ROI-heads inference post-processing (CPU): detcore's Fast R-CNN inference vs torchvision's
``RoIHeads.postprocess_detections``.

Inputs (seed 0): 1,000 random proposals in an 800x1333 image, 80 classes, class logits and class-specific
box deltas (weights 10, 10, 5, 5); score threshold 0.05, NMS 0.5, 100 detections. torchvision's layout puts the
background first (logit column 0, a zero delta block), detcore's (detectron2's) last: the same numbers.

Rows:
- ``fast_rcnn_inference (softmax + decode + post-process)``: ``FastRCNNOutputLayers.predict_probs`` /
  ``predict_boxes`` + :func:`fast_rcnn_inference` vs ``postprocess_detections`` (which also decodes, soft-maxes,
  clips, removes tiny boxes, thresholds, runs batched NMS and keeps the top 100).
- ``fast_rcnn_inference (post-process only)``: :func:`fast_rcnn_inference` on decoded boxes and probabilities vs
  the same steps written with torchvision ops (clip, threshold, ``torchvision.ops.batched_nms``, top-k).
"""

from __future__ import annotations

import torch
from _timing import interleaved_medians

__all__ = ["run"]


def _inputs(num_proposals: int, num_classes: int, height: int, width: int, logit_scale: float):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(num_proposals, 2, generator=g) * torch.tensor([width * 0.9, height * 0.9])
    wh = torch.rand(num_proposals, 2, generator=g) * 300 + 8
    proposals = torch.cat([xy, xy + wh], dim=1)
    logits = torch.randn(num_proposals, num_classes + 1, generator=g) * logit_scale
    deltas = torch.randn(num_proposals, num_classes * 4, generator=g) * 0.5
    return proposals, logits, deltas


def run(report, num_proposals: int = 1000, num_classes: int = 80, repeats: int = 15) -> None:
    import torchvision
    from torchvision.models.detection.roi_heads import RoIHeads

    from detcore.heads import Box2BoxTransform
    from detcore.heads.roi_heads import FastRCNNOutputLayers, fast_rcnn_inference
    from detcore.structures import Boxes, Instances

    torch.set_num_threads(2)
    height, width = 800, 1333
    score_thresh, nms_thresh, topk = 0.05, 0.5, 100
    tv_heads = RoIHeads(
        box_roi_pool=None,
        box_head=None,
        box_predictor=None,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=512,
        positive_fraction=0.25,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=topk,
    )
    predictor = FastRCNNOutputLayers(
        16,
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=num_classes,
        test_score_thresh=score_thresh,
        test_nms_thresh=nms_thresh,
        test_topk_per_image=topk,
    )
    for logit_scale in (1.0, 3.0):
        proposals, logits, deltas = _inputs(num_proposals, num_classes, height, width, logit_scale)
        # torchvision: background first
        tv_logits = torch.cat([logits[:, -1:], logits[:, :-1]], dim=1)
        tv_deltas = torch.cat([torch.zeros(num_proposals, 4), deltas], dim=1)
        inst = Instances((height, width), proposal_boxes=Boxes(proposals))
        num_candidates = int((torch.softmax(logits, -1)[:, :-1] > score_thresh).sum())

        def ours_full(logits=logits, deltas=deltas, inst=inst):
            return predictor.inference((logits, deltas), [inst])

        def tv_full(tv_logits=tv_logits, tv_deltas=tv_deltas, proposals=proposals):
            return tv_heads.postprocess_detections(tv_logits, tv_deltas, [proposals], [(height, width)])

        with torch.no_grad():
            a, b = interleaved_medians(ours_full, tv_full, repeats, warmup=3)
        note = (
            f"{num_proposals} proposals, {num_classes} classes, {num_candidates} candidates > {score_thresh}"
        )
        report(
            f"fast_rcnn_inference (softmax + decode + post-process), logit scale {logit_scale:g}",
            a,
            b,
            "torchvision RoIHeads.postprocess_detections",
            note,
        )

        boxes = predictor.predict_boxes((logits, deltas), [inst])[0]
        probs = predictor.predict_probs((logits, deltas), [inst])[0]

        def ours_post(boxes=boxes, probs=probs):
            return fast_rcnn_inference([boxes], [probs], [(height, width)], score_thresh, nms_thresh, topk)

        def tv_post(boxes=boxes, probs=probs):
            bx = boxes.reshape(-1, num_classes, 4)
            bx = torch.stack(
                (
                    bx[..., 0].clamp(0, width),
                    bx[..., 1].clamp(0, height),
                    bx[..., 2].clamp(0, width),
                    bx[..., 3].clamp(0, height),
                ),
                dim=-1,
            )
            sc = probs[:, :-1]
            mask = sc > score_thresh
            idx = mask.nonzero()
            kb, ks = bx[mask], sc[mask]
            keep = torchvision.ops.batched_nms(kb, ks, idx[:, 1], nms_thresh)[:topk]
            return kb[keep], ks[keep], idx[keep, 1]

        with torch.no_grad():
            a, b = interleaved_medians(ours_post, tv_post, repeats, warmup=3)
        report(
            f"fast_rcnn_inference (post-process only), logit scale {logit_scale:g}",
            a,
            b,
            "torchvision ops (clip, threshold, batched_nms, top-k)",
            note,
        )


if __name__ == "__main__":

    def _print(name, ours, ref, ref_name, note=""):
        print(
            f"{name:55s} detcore {ours * 1e3:8.3f} ms  {ref_name}: {ref * 1e3:8.3f} ms  x{ref / ours:5.2f}  {note}"
        )

    run(_print)
