"""Proposal selection shared by proposal generators: per-level top-k, clip, size filter, per-level NMS."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detcore.ops import batched_nms
from detcore.structures import Boxes, Instances

__all__ = ["find_top_rpn_proposals", "select_proposals_per_image"]


def _is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def select_proposals_per_image(
    topk_proposals: Tensor,
    topk_scores: Tensor,
    level_ids: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Second half of :func:`find_top_rpn_proposals`, once the per-level top-k candidates are known.

    For each image: drop non-finite candidates (an error in training), clip to the image, drop boxes whose
    width or height is ``<= min_box_size``, NMS within each level, keep the ``post_nms_topk`` best.

    Args:
        topk_proposals (Tensor[N, K, 4]): candidate XYXY boxes of each image.
        topk_scores (Tensor[N, K]): their objectness logits.
        level_ids (Tensor[K] int64): the level of each candidate.
        image_sizes (list[tuple[int, int]]): ``(h, w)`` of each image.
        nms_thresh (float): IoU threshold of the per-level NMS.
        post_nms_topk (int): proposals kept per image.
        min_box_size (float): minimal width and height.
        training (bool): raise FloatingPointError on non-finite values instead of dropping them.

    Returns:
        list[Instances]: per image, fields ``proposal_boxes`` (Boxes) and ``objectness_logits`` (Tensor),
        sorted by decreasing objectness.
    """
    results: list[Instances] = []
    for n, image_size in enumerate(image_sizes):
        boxes_t = topk_proposals[n]
        scores_per_img = topk_scores[n]
        lvl = level_ids

        valid_mask = torch.isfinite(boxes_t).all(dim=1) & torch.isfinite(scores_per_img)
        if training and not bool(valid_mask.all()):
            raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
        h, w = image_size
        boxes_t = torch.stack(
            (
                boxes_t[:, 0].clamp(min=0, max=w),
                boxes_t[:, 1].clamp(min=0, max=h),
                boxes_t[:, 2].clamp(min=0, max=w),
                boxes_t[:, 3].clamp(min=0, max=h),
            ),
            dim=-1,
        )

        # One order-preserving selection for both filters (non-finite candidates, boxes not larger than
        # min_box_size after clipping): the same candidates as filtering one after the other, with no branch
        # on the data (clipping is elementwise, so clipping the non-finite rows too changes nothing kept).
        keep = (
            valid_mask
            & ((boxes_t[:, 2] - boxes_t[:, 0]) > min_box_size)
            & ((boxes_t[:, 3] - boxes_t[:, 1]) > min_box_size)
        )
        if _is_tracing() or not bool(keep.all()):
            (keep_idx,) = torch.nonzero(keep, as_tuple=True)
            boxes_t, scores_per_img, lvl = boxes_t[keep_idx], scores_per_img[keep_idx], lvl[keep_idx]

        keep = batched_nms(boxes_t, scores_per_img, lvl, nms_thresh)
        keep = keep[:post_nms_topk]  # already sorted by decreasing score

        res = Instances(image_size)
        res.proposal_boxes = Boxes._wrap(boxes_t[keep])
        res.objectness_logits = scores_per_img[keep]
        results.append(res)
    return results


def find_top_rpn_proposals(
    proposals: list[Tensor],
    pred_objectness_logits: list[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Select proposals as detectron2 does.

    1. For each level and image, the ``pre_nms_topk`` highest-scoring boxes (all when fewer).
    2. For each image: clip, remove small boxes, NMS within each level, keep the ``post_nms_topk`` best.

    Args:
        proposals (list[Tensor[N, Hi*Wi*A, 4]]): decoded boxes of each level.
        pred_objectness_logits (list[Tensor[N, Hi*Wi*A]]): objectness logits of each level.
        image_sizes (list[tuple[int, int]]): ``(h, w)`` of each image.
        nms_thresh (float): IoU threshold of the per-level NMS.
        pre_nms_topk (int): candidates per level and image before NMS.
        post_nms_topk (int): proposals per image after NMS.
        min_box_size (float): minimal proposal width and height (after clipping).
        training (bool): whether the model is training (non-finite values raise instead of being dropped).

    Returns:
        list[Instances]: N Instances with ``proposal_boxes`` and ``objectness_logits``, best first.
    """
    if len(proposals) != len(pred_objectness_logits) or len(proposals) == 0:
        raise ValueError(
            "proposals and pred_objectness_logits must be non-empty lists with one tensor per level, got "
            f"{len(proposals)} and {len(pred_objectness_logits)}"
        )
    num_images = len(image_sizes)
    device = proposals[0].device
    batch_idx = torch.arange(num_images, device=device)
    topk_scores, topk_proposals, level_ids = [], [], []
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_proposals_i = min(logits_i.shape[1], pre_nms_topk)
        topk_scores_i, topk_idx = logits_i.topk(num_proposals_i, dim=1)
        topk_proposals.append(proposals_i[batch_idx[:, None], topk_idx])
        topk_scores.append(topk_scores_i)
        level_ids.append(torch.full((num_proposals_i,), level_id, dtype=torch.int64, device=device))
    return select_proposals_per_image(
        torch.cat(topk_proposals, dim=1),
        torch.cat(topk_scores, dim=1),
        torch.cat(level_ids, dim=0),
        image_sizes,
        nms_thresh,
        post_nms_topk,
        min_box_size,
        training,
    )
