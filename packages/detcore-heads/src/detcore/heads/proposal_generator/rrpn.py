"""Rotated Region Proposal Network (detectron2's ``RRPN`` and ``find_top_rrpn_proposals``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from detcore.heads.anchor_generator import RotatedAnchorGeneratorConfig
from detcore.heads.box_regression import Box2BoxTransformRotated
from detcore.heads.proposal_generator.rpn import RPN, RPNConfig
from detcore.ops import ShapeSpec, batched_nms_rotated
from detcore.structures import Instances, RotatedBoxes, pairwise_iou_rotated

__all__ = ["RRPN", "RRPNConfig", "find_top_rrpn_proposals"]


def _select_rrpn_proposals_per_image(
    topk_proposals: Tensor,
    topk_scores: Tensor,
    level_ids: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Per image: drop non-finite candidates (an error in training), clip nearly horizontal boxes, drop boxes
    with width or height ``<= min_box_size``, rotated NMS within each level, keep the ``post_nms_topk`` best."""
    results = []
    for n, image_size in enumerate(image_sizes):
        boxes = RotatedBoxes._wrap(topk_proposals[n].clone())
        scores_per_img = topk_scores[n]
        lvl = level_ids
        valid_mask = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores_per_img)
        if not bool(valid_mask.all()):
            if training:
                raise FloatingPointError("Predicted boxes or scores contain Inf/NaN. Training has diverged.")
            boxes = RotatedBoxes._wrap(boxes.tensor[valid_mask])
            scores_per_img, lvl = scores_per_img[valid_mask], lvl[valid_mask]
        boxes.clip(image_size)
        keep = boxes.nonempty(threshold=min_box_size)
        if not bool(keep.all()):
            boxes = RotatedBoxes._wrap(boxes.tensor[keep])
            scores_per_img, lvl = scores_per_img[keep], lvl[keep]
        keep = batched_nms_rotated(boxes.tensor, scores_per_img, lvl, float(nms_thresh))
        keep = keep[:post_nms_topk]
        res = Instances(image_size)
        res.proposal_boxes = RotatedBoxes._wrap(boxes.tensor[keep])
        res.objectness_logits = scores_per_img[keep]
        results.append(res)
    return results


def find_top_rrpn_proposals(
    proposals: list[Tensor],
    pred_objectness_logits: list[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
) -> list[Instances]:
    """Select rotated proposals as detectron2 does.

    1. For each level and image, the ``pre_nms_topk`` highest-scoring boxes (all when fewer).
    2. For each image: clip (nearly horizontal boxes only, see :meth:`RotatedBoxes.clip`), remove boxes with
       width or height ``<= min_box_size``, rotated NMS within each level, keep the ``post_nms_topk`` best.

    Args:
        proposals (list[Tensor[N, Hi*Wi*A, 5]]): decoded rotated boxes of each level.
        pred_objectness_logits (list[Tensor[N, Hi*Wi*A]]): objectness logits of each level.
        image_sizes (list[tuple[int, int]]): ``(h, w)`` of each image.
        nms_thresh (float): IoU threshold of the per-level rotated NMS.
        pre_nms_topk (int): candidates per level and image before NMS.
        post_nms_topk (int): proposals per image after NMS.
        min_box_size (float): minimal width and height (after clipping).
        training (bool): non-finite values raise FloatingPointError instead of being dropped.

    Returns:
        list[Instances]: N Instances with ``proposal_boxes`` (RotatedBoxes) and ``objectness_logits``, best
        first.
    """
    if len(proposals) != len(pred_objectness_logits) or len(proposals) == 0:
        raise ValueError(
            "proposals and pred_objectness_logits must be non-empty lists with one tensor per level, got "
            f"{len(proposals)} and {len(pred_objectness_logits)}"
        )
    for i, p in enumerate(proposals):
        if not isinstance(p, Tensor) or p.dim() != 3 or p.shape[-1] != 5:
            raise ValueError(f"proposals[{i}] must be a Tensor[N, R, 5], got {getattr(p, 'shape', p)!r}")
    num_images = len(image_sizes)
    device = proposals[0].device
    batch_idx = torch.arange(num_images, device=device)
    topk_scores, topk_proposals, level_ids = [], [], []
    for level_id, (proposals_i, logits_i) in enumerate(zip(proposals, pred_objectness_logits)):
        num_proposals_i = min(logits_i.shape[1], pre_nms_topk)
        logits_sorted, idx = logits_i.sort(descending=True, dim=1)
        topk_scores.append(logits_sorted[:, :num_proposals_i])
        topk_proposals.append(proposals_i[batch_idx[:, None], idx[:, :num_proposals_i]])
        level_ids.append(torch.full((num_proposals_i,), level_id, dtype=torch.int64, device=device))
    return _select_rrpn_proposals_per_image(
        torch.cat(topk_proposals, dim=1),
        torch.cat(topk_scores, dim=1),
        torch.cat(level_ids, dim=0),
        image_sizes,
        nms_thresh,
        post_nms_topk,
        min_box_size,
        training,
    )


@dataclass(frozen=True)
class RRPNConfig(RPNConfig):
    """Config of :class:`RRPN`: :class:`RPNConfig` with a ``RotatedAnchorGenerator`` and
    Box2BoxTransformRotated weights ``(1, 1, 1, 1, 1)`` (detectron2's rotated configs)."""

    anchor_generator_name: str = "RotatedAnchorGenerator"
    anchor_generator: Any = field(default_factory=RotatedAnchorGeneratorConfig)
    bbox_reg_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)

    @classmethod
    def base_rcnn_fpn(cls) -> RRPNConfig:
        """Not defined for RRPN (detectron2 has no rotated FPN base config)."""
        raise NotImplementedError("RRPNConfig has no base_rcnn_fpn preset; build RRPNConfig(...) directly")


class RRPN(RPN):
    """Rotated Region Proposal Network (detectron2's ``RRPN``): :class:`RPN` on rotated anchors
    ``(x_ctr, y_ctr, w, h, angle)``, matched to rotated ground truth by rotated IoU, decoded with
    :class:`Box2BoxTransformRotated` and selected by :func:`find_top_rrpn_proposals` (rotated NMS).

    Same constructor as :class:`RPN` (``anchor_generator`` a RotatedAnchorGenerator, ``box2box_transform`` a
    Box2BoxTransformRotated); ``anchor_boundary_thresh`` must be negative (not implemented, as in detectron2).
    The loss box regression type must be "smooth_l1".
    """

    config_class: ClassVar[type] = RRPNConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.anchor_boundary_thresh >= 0:
            raise ValueError(
                f"anchor_boundary_thresh must be negative for RRPN (not implemented), got "
                f"{self.anchor_boundary_thresh}"
            )
        if not isinstance(self.box2box_transform, Box2BoxTransformRotated):
            raise TypeError(
                f"box2box_transform must be a Box2BoxTransformRotated, got {type(self.box2box_transform).__name__}"
            )
        if getattr(self.anchor_generator, "box_dim", None) != 5:
            raise TypeError("anchor_generator must produce rotated anchors (box_dim 5)")
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                f"box_reg_loss_type must be 'smooth_l1' for RRPN, got {self.box_reg_loss_type!r}"
            )

    @classmethod
    def from_config(cls, cfg: RRPNConfig | None, input_shape: Mapping[str, ShapeSpec]) -> dict[str, Any]:
        """Constructor kwargs: those of :meth:`RPN.from_config` with a Box2BoxTransformRotated."""
        cfg = cfg if cfg is not None else RRPNConfig()
        # RPN.from_config builds an axis-aligned transform from the weights: give it 4 and replace it
        ret = super().from_config(
            dataclasses.replace(cfg, bbox_reg_weights=(1.0, 1.0, 1.0, 1.0)), input_shape
        )
        ret["box2box_transform"] = Box2BoxTransformRotated(weights=cfg.bbox_reg_weights)
        return ret

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: list[RotatedBoxes], gt_instances: list[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Label every anchor by rotated IoU with the ground truth and sample ``batch_size_per_image``.

        Args:
            anchors (list[RotatedBoxes]): anchors of each level.
            gt_instances (list[Instances]): per image, ``gt_boxes`` (RotatedBoxes).

        Returns:
            gt_labels (list[Tensor[R] int8]): per image, 1 (sampled positive), 0 (sampled negative) or -1.
            matched_gt_boxes (list[Tensor[R, 5]]): per image, the ground-truth box matched to each anchor
            (zeros when the image has no ground truth).
        """
        anchors_all = RotatedBoxes.cat(list(anchors))
        gt_labels, matched_gt_boxes = [], []
        for i, inst in enumerate(gt_instances):
            if not (
                isinstance(inst, Instances)
                and inst.has("gt_boxes")
                and isinstance(inst.gt_boxes, RotatedBoxes)
            ):
                raise ValueError(f"gt_instances[{i}] must be Instances with gt_boxes as RotatedBoxes")
            gt_boxes_i = inst.gt_boxes
            match_quality_matrix = pairwise_iou_rotated(gt_boxes_i, anchors_all)
            matched_idxs, gt_labels_i = self.anchor_matcher(match_quality_matrix)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            del match_quality_matrix
            gt_labels_i = self._subsample_labels(gt_labels_i)
            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(anchors_all.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i.tensor[matched_idxs]
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def _predict(
        self,
        anchors: list[RotatedBoxes],
        pred_objectness_logits: list[Tensor],
        gather_deltas: Callable[[int, Tensor], Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Per level top-k (in sorted order, as :func:`find_top_rrpn_proposals`), decode only those, then the
        per-image rotated selection."""
        num_images = len(image_sizes)
        pre_nms_topk = self.pre_nms_topk[self.training]
        device = pred_objectness_logits[0].device
        topk_scores, topk_proposals, level_ids = [], [], []
        for level_id, (anchors_i, logits_i) in enumerate(zip(anchors, pred_objectness_logits)):
            k = min(logits_i.shape[1], pre_nms_topk)
            logits_sorted, order = logits_i.sort(descending=True, dim=1)
            scores_i, idx = logits_sorted[:, :k], order[:, :k]
            sel_deltas = gather_deltas(level_id, idx).reshape(-1, 5)
            sel_anchors = anchors_i.tensor[idx.reshape(-1)]
            boxes_i = self.box2box_transform.apply_deltas(sel_deltas, sel_anchors)
            topk_proposals.append(boxes_i.view(num_images, k, 5))
            topk_scores.append(scores_i)
            level_ids.append(torch.full((k,), level_id, dtype=torch.int64, device=device))
        return _select_rrpn_proposals_per_image(
            torch.cat(topk_proposals, dim=1),
            torch.cat(topk_scores, dim=1),
            torch.cat(level_ids, dim=0),
            image_sizes,
            self.nms_thresh,
            self.post_nms_topk[self.training],
            self.min_box_size,
            self.training,
        )
