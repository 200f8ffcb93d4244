"""FCOS's training and inference logic (detectron2's ``FCOS`` meta-architecture, minus the backbone and
image handling): point-to-box matching with centre sampling and per-level scale ranges, focal + GIoU +
centerness losses, and inference with ``sqrt(cls * ctr)`` scores.

FCOS's "anchors" are boxes of the size of the level's stride centred on each feature-map position (a
:class:`DefaultAnchorGenerator` with one anchor of size ``stride`` per level and offset 0.5, as detectron2's
FCOS config builds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from detcore.heads.anchor_generator import DefaultAnchorGenerator
from detcore.heads.box_regression import Box2BoxTransformLinear, _dense_box_regression_loss
from detcore.heads.dense.dense_detector import (
    DenseDetectorLogic,
    EMALossNormalizer,
    transpose_dense_predictions,
)
from detcore.heads.dense.retinanet import _check_gt
from detcore.ops import cat, sigmoid_focal_loss
from detcore.structures import Boxes, Instances, pairwise_point_box_distance

__all__ = [
    "FCOSLogic",
    "fcos_anchor_generator",
    "fcos_ctrness_targets",
    "fcos_label_anchors",
    "fcos_match_anchors",
]


def fcos_anchor_generator(strides: Sequence[int]) -> DefaultAnchorGenerator:
    """FCOS's point "anchors": one square box of the stride's size per position, centred on the position
    (``offset=0.5``), as detectron2's ``FCOS.__init__`` builds them."""
    return DefaultAnchorGenerator(
        sizes=[[float(s)] for s in strides], aspect_ratios=[1.0], strides=list(strides), offset=0.5
    )


@torch.no_grad()
def fcos_match_anchors(
    gt_boxes: Boxes, anchors: Sequence[Boxes], center_sampling_radius: float = 1.5
) -> Tensor:
    """FCOS's match quality of every (ground truth, anchor point) pair (detectron2's ``FCOS._match_anchors``).

    A point (the centre of an anchor of size ``s``, the level's stride) can match a ground-truth box when
    (1) it is within ``center_sampling_radius * s`` of the box centre in both x and y (strictly),
    (2) it lies strictly inside the box, and (3) the largest of its distances to the four sides is in
    ``(4 s, 8 s)`` (``[0, 8 s)`` on the first level, ``(4 s, inf)`` on the last). Among several matching
    boxes the smallest one wins.

    Args:
        gt_boxes (Boxes): M ground-truth boxes.
        anchors (list[Boxes]): anchors of each level (R in total).
        center_sampling_radius (float): in strides.

    Returns:
        Tensor[M, R] float32: ``1e8 - area`` of the box where the pair matches, 0 elsewhere.
    """
    num_anchors_per_level = [len(x) for x in anchors]
    anchors_all = Boxes.cat(list(anchors))
    anchor_centers = anchors_all.get_centers()  # [R, 2]
    anchor_sizes = anchors_all.tensor[:, 2] - anchors_all.tensor[:, 0]  # [R]

    lower_bound = anchor_sizes * 4
    lower_bound[: num_anchors_per_level[0]] = 0
    upper_bound = anchor_sizes * 8
    upper_bound[-num_anchors_per_level[-1] :] = float("inf")

    gt_centers = gt_boxes.get_centers()  # [M, 2]
    center_dists = (anchor_centers[None, :, :] - gt_centers[:, None, :]).abs_().max(dim=2).values
    sampling_regions = center_sampling_radius * anchor_sizes[None, :]
    match_quality_matrix = center_dists < sampling_regions

    pairwise_dist = pairwise_point_box_distance(anchor_centers, gt_boxes).permute(1, 0, 2)  # [M, R, 4]
    match_quality_matrix &= pairwise_dist.min(dim=2).values > 0
    pairwise_dist = pairwise_dist.max(dim=2).values
    match_quality_matrix &= (pairwise_dist > lower_bound[None, :]) & (pairwise_dist < upper_bound[None, :])

    gt_areas = gt_boxes.area()
    match_quality_matrix = match_quality_matrix.to(torch.float32)
    match_quality_matrix *= 1e8 - gt_areas[:, None]
    return match_quality_matrix


@torch.no_grad()
def fcos_label_anchors(
    anchors: Sequence[Boxes],
    gt_instances: Sequence[Instances],
    num_classes: int,
    center_sampling_radius: float = 1.5,
) -> tuple[list[Tensor], list[Tensor]]:
    """Label every anchor point of every image with FCOS's rule (no ignored points).

    Args:
        anchors (list[Boxes]): anchors of each level (R in total).
        gt_instances (list[Instances]): per image, ``gt_boxes`` and ``gt_classes``.
        num_classes (int): K; the background label.
        center_sampling_radius (float): see :func:`fcos_match_anchors`.

    Returns:
        gt_labels (list[Tensor[R] int64]): class in [0, K) or K (background).
        matched_gt_boxes (list[Tensor[R, 4]]): matched box (meaningful for foreground points only).
    """
    gt_instances = _check_gt(gt_instances)
    num_anchors = sum(len(a) for a in anchors)
    gt_labels, matched_gt_boxes = [], []
    for inst in gt_instances:
        if len(inst) > 0:
            match_quality_matrix = fcos_match_anchors(inst.gt_boxes, anchors, center_sampling_radius)
            match_quality, matched_idx = match_quality_matrix.max(0)
            matched_idx[match_quality < 1e-5] = -1
            matched_gt_boxes_i = inst.gt_boxes.tensor[matched_idx.clip(min=0)]
            gt_labels_i = inst.gt_classes.to(torch.int64)[matched_idx.clip(min=0)]
            gt_labels_i[matched_idx < 0] = num_classes
        else:
            ref = anchors[0].tensor
            matched_gt_boxes_i = ref.new_zeros((num_anchors, 4))
            gt_labels_i = torch.full((num_anchors,), num_classes, dtype=torch.int64, device=ref.device)
        gt_labels.append(gt_labels_i)
        matched_gt_boxes.append(matched_gt_boxes_i)
    return gt_labels, matched_gt_boxes


def fcos_ctrness_targets(
    anchors: Sequence[Boxes], gt_boxes: Sequence[Tensor], box2box_transform: Any | None = None
) -> Tensor:
    """Centerness targets ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of every anchor point.

    Args:
        anchors (list[Boxes]): anchors of each level (R in total).
        gt_boxes (list[Tensor[R, 4]]): per image, the matched box of each point.
        box2box_transform: gives ``(l, t, r, b)``; default ``Box2BoxTransformLinear(normalize_by_size=True)``
            (the ratios do not depend on the normalisation).

    Returns:
        Tensor[N, R]: values in [0, 1] where the point is inside its box (undefined / NaN elsewhere).
    """
    if box2box_transform is None:
        box2box_transform = Box2BoxTransformLinear(normalize_by_size=True)
    anchors_t = Boxes.cat(list(anchors)).tensor
    if len(gt_boxes) == 0:
        return anchors_t.new_zeros((0, anchors_t.shape[0]))
    reg_targets = torch.stack([box2box_transform.get_deltas(anchors_t, m) for m in gt_boxes], dim=0)
    left_right = reg_targets[:, :, [0, 2]]
    top_bottom = reg_targets[:, :, [1, 3]]
    ctrness = (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * (
        top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]
    )
    return torch.sqrt(ctrness)


class FCOSLogic(DenseDetectorLogic):
    """FCOS's labelling, losses and inference with detectron2's defaults.

    Losses ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr") are sums divided by the EMA (initial 300,
    momentum 0.9) of the foreground count: sigmoid focal loss over all points, GIoU loss on boxes decoded
    with ``Box2BoxTransformLinear(normalize_by_size=True)`` and centerness BCE, both over foreground points.

    Args:
        num_classes (int): K.
        box2box_transform: default ``Box2BoxTransformLinear(normalize_by_size=True)``.
        center_sampling_radius (float): in strides.
        focal_loss_alpha (float), focal_loss_gamma (float): focal loss parameters.
        test_score_thresh (float): candidates need ``sqrt(cls * ctr)`` strictly above it.
        test_topk_candidates (int): candidates per level before NMS.
        test_nms_thresh (float): class-wise NMS IoU threshold.
        max_detections_per_image (int): detections kept per image.
        loss_normalizer_init (float), loss_normalizer_momentum (float): the foreground-count EMA.
    """

    def __init__(
        self,
        *,
        num_classes: int = 80,
        box2box_transform: Any = None,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        test_score_thresh: float = 0.2,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        max_detections_per_image: int = 100,
        loss_normalizer_init: float = 300.0,
        loss_normalizer_momentum: float = 0.9,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.box2box_transform = (
            box2box_transform
            if box2box_transform is not None
            else Box2BoxTransformLinear(normalize_by_size=True)
        )
        self.center_sampling_radius = float(center_sampling_radius)
        self.focal_loss_alpha = float(focal_loss_alpha)
        self.focal_loss_gamma = float(focal_loss_gamma)
        self.test_score_thresh = float(test_score_thresh)
        self.test_topk_candidates = int(test_topk_candidates)
        self.test_nms_thresh = float(test_nms_thresh)
        self.max_detections_per_image = int(max_detections_per_image)
        self.loss_normalizer = EMALossNormalizer(loss_normalizer_init, loss_normalizer_momentum)

    def label_anchors(
        self, anchors: Sequence[Boxes], gt_instances: Sequence[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """See :func:`fcos_label_anchors`."""
        return fcos_label_anchors(anchors, gt_instances, self.num_classes, self.center_sampling_radius)

    def compute_ctrness_targets(self, anchors: Sequence[Boxes], gt_boxes: Sequence[Tensor]) -> Tensor:
        """See :func:`fcos_ctrness_targets`."""
        return fcos_ctrness_targets(anchors, gt_boxes, self.box2box_transform)

    def losses(
        self,
        anchors: Sequence[Boxes],
        pred_logits: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pred_anchor_deltas: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        pred_centerness: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        """FCOS losses from per-level predictions in ``[N, Ri, K]`` / ``[N, Ri, 4]`` / ``[N, Ri, 1]`` layout.

        Returns:
            dict with "loss_fcos_cls", "loss_fcos_loc" and "loss_fcos_ctr" (scalars).
        """
        gt_labels_t = torch.stack(list(gt_labels))  # [N, R]
        pos_mask = (gt_labels_t >= 0) & (gt_labels_t != self.num_classes)
        num_pos_anchors = int(pos_mask.sum().item())
        normalizer = self.loss_normalizer.update(num_pos_anchors)

        logits = cat(list(pred_logits), dim=1)
        if logits.shape[:2] != gt_labels_t.shape:
            raise ValueError(
                f"pred_logits must total [N, R, K] = [{gt_labels_t.shape[0]}, {gt_labels_t.shape[1]}, K] "
                f"over levels, got {list(logits.shape)}"
            )
        gt_labels_target = F.one_hot(gt_labels_t, num_classes=self.num_classes + 1)[:, :, :-1]
        loss_cls = sigmoid_focal_loss(
            logits,
            gt_labels_target.to(logits.dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            list(anchors),
            self.box2box_transform,
            list(pred_anchor_deltas),
            list(gt_boxes),
            pos_mask,
            box_reg_loss_type="giou",
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # [N, R]
        pred_ctr = cat(list(pred_centerness), dim=1).squeeze(dim=2)  # [N, R]
        ctrness_loss = F.binary_cross_entropy_with_logits(
            pred_ctr[pos_mask], ctrness_targets[pos_mask].to(pred_ctr.dtype), reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": ctrness_loss / normalizer,
        }

    def forward_training(
        self,
        anchors: Sequence[Boxes],
        predictions: Sequence[Sequence[Tensor]],
        gt_instances: Sequence[Instances],
    ) -> dict[str, Tensor]:
        """Losses from the raw head outputs ``(logits, deltas, ctrness)`` (per level, NCHW)."""
        pred_logits, pred_deltas, pred_ctr = transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes, pred_ctr)

    def forward_inference(
        self,
        anchors: Sequence[Boxes],
        predictions: Sequence[Sequence[Tensor]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Detections of every image from the raw head outputs; scores are
        ``sqrt(sigmoid(cls) * sigmoid(ctr))`` (eq. 4 of https://arxiv.org/abs/2006.09214)."""
        pred_logits, pred_deltas, pred_ctr = transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1]
        )
        results = []
        for img_idx, image_size in enumerate(image_sizes):
            scores = [
                torch.sqrt(x[img_idx].sigmoid() * y[img_idx].sigmoid()) for x, y in zip(pred_logits, pred_ctr)
            ]
            deltas = [x[img_idx] for x in pred_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results
