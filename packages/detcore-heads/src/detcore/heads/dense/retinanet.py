"""RetinaNet's training and inference logic (detectron2's ``RetinaNet`` meta-architecture, minus the
backbone and image handling): anchor labelling, focal + box regression losses, and inference.

:class:`RetinaNetLogic` holds the hyper-parameters (detectron2's defaults) and the loss-normaliser EMA; the
functions it calls are usable on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from detcore.heads.anchor_generator import DefaultAnchorGeneratorConfig
from detcore.heads.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detcore.heads.dense.dense_detector import (
    DenseDetectorLogic,
    EMALossNormalizer,
    transpose_dense_predictions,
)
from detcore.heads.matcher import Matcher
from detcore.ops import cat, sigmoid_focal_loss
from detcore.structures import Boxes, Instances, pairwise_iou

__all__ = [
    "RetinaNetLogic",
    "retinanet_anchor_generator_config",
    "retinanet_label_anchors",
    "retinanet_losses",
]


def retinanet_anchor_generator_config() -> DefaultAnchorGeneratorConfig:
    """Base-RetinaNet.yaml's anchors: sizes ``x * 2 ** (i / 3)`` (i = 0, 1, 2) for x = 32..512 on p3..p7, aspect
    ratios 0.5/1/2 (9 anchors per position), offset 0."""
    return DefaultAnchorGeneratorConfig(
        sizes=tuple(tuple(x * 2 ** (i / 3.0) for i in range(3)) for x in (32, 64, 128, 256, 512)),
        aspect_ratios=((0.5, 1.0, 2.0),),
    )


_BOX_LOSSES = ("smooth_l1", "giou", "diou", "ciou")


def _check_gt(gt_instances: Any, need_classes: bool = True) -> list[Instances]:
    if not isinstance(gt_instances, (list, tuple)):
        raise TypeError(f"gt_instances must be a list of Instances, got {type(gt_instances).__name__}")
    for i, inst in enumerate(gt_instances):
        if not isinstance(inst, Instances) or not inst.has("gt_boxes"):
            raise ValueError(f"gt_instances[{i}] must be an Instances with a gt_boxes field")
        if need_classes and len(inst) > 0 and not inst.has("gt_classes"):
            raise ValueError(f"gt_instances[{i}] must have a gt_classes field")
    return list(gt_instances)


@torch.no_grad()
def retinanet_label_anchors(
    anchors: Sequence[Boxes], gt_instances: Sequence[Instances], anchor_matcher: Matcher, num_classes: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Label every anchor of every image (detectron2's ``RetinaNet.label_anchors``).

    Args:
        anchors (list[Boxes]): anchors of each level (R in total).
        gt_instances (list[Instances]): per image, ``gt_boxes`` (Boxes) and ``gt_classes`` (int64).
        anchor_matcher (Matcher): IoU matcher (RetinaNet: thresholds [0.4, 0.5], labels [0, -1, 1], low-quality
            matches allowed).
        num_classes (int): K; the background label.

    Returns:
        gt_labels (list[Tensor[R] int64]): per image, a class in [0, K) for foreground anchors, K for
        background, -1 for ignored ones.
        matched_gt_boxes (list[Tensor[R, 4]]): per image, the matched ground-truth box of each anchor
        (meaningful for foreground anchors only; zeros without ground truth).
    """
    gt_instances = _check_gt(gt_instances)
    anchors_all = Boxes.cat(list(anchors))
    gt_labels, matched_gt_boxes = [], []
    for inst in gt_instances:
        match_quality_matrix = pairwise_iou(inst.gt_boxes, anchors_all)
        matched_idxs, anchor_labels = anchor_matcher(match_quality_matrix)
        del match_quality_matrix
        if len(inst) > 0:
            matched_gt_boxes_i = inst.gt_boxes.tensor[matched_idxs]
            gt_labels_i = inst.gt_classes.to(torch.int64)[matched_idxs]
            gt_labels_i[anchor_labels == 0] = num_classes
            gt_labels_i[anchor_labels == -1] = -1
        else:
            matched_gt_boxes_i = torch.zeros_like(anchors_all.tensor)
            gt_labels_i = torch.full_like(matched_idxs, num_classes)
        gt_labels.append(gt_labels_i)
        matched_gt_boxes.append(matched_gt_boxes_i)
    return gt_labels, matched_gt_boxes


def retinanet_losses(
    anchors: Sequence[Boxes],
    pred_logits: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    pred_anchor_deltas: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    *,
    num_classes: int,
    box2box_transform: Any,
    normalizer: EMALossNormalizer,
    focal_loss_alpha: float = 0.25,
    focal_loss_gamma: float = 2.0,
    box_reg_loss_type: str = "smooth_l1",
    smooth_l1_beta: float = 0.1,
) -> dict[str, Tensor]:
    """RetinaNet's losses (detectron2's ``RetinaNet.losses``): sigmoid focal loss over non-ignored anchors and
    box regression over foreground anchors, both summed and divided by the EMA of the foreground count
    (``normalizer`` is updated).

    Args:
        anchors (list[Boxes]): anchors of each level.
        pred_logits (list[Tensor[N, Ri, K]]): per level (see :func:`permute_to_N_HWA_K`).
        gt_labels (list[Tensor[R]]): per image, from :func:`retinanet_label_anchors`.
        pred_anchor_deltas (list[Tensor[N, Ri, 4]]): per level.
        gt_boxes (list[Tensor[R, 4]]): per image, matched ground-truth boxes.
        num_classes (int): K.
        box2box_transform: the box coder.
        normalizer (EMALossNormalizer): the foreground-count EMA.
        focal_loss_alpha, focal_loss_gamma: focal loss parameters.
        box_reg_loss_type (str): "smooth_l1", "giou", "diou" or "ciou".
        smooth_l1_beta (float): smooth L1 beta.

    Returns:
        dict with "loss_cls" and "loss_box_reg" (scalars).
    """
    if box_reg_loss_type not in _BOX_LOSSES:
        raise ValueError(f"box_reg_loss_type must be one of {_BOX_LOSSES}, got {box_reg_loss_type!r}")
    gt_labels_t = torch.stack(list(gt_labels))  # [N, R]
    valid_mask = gt_labels_t >= 0
    pos_mask = valid_mask & (gt_labels_t != num_classes)
    num_pos_anchors = int(pos_mask.sum().item())
    norm = normalizer.update(num_pos_anchors)

    logits = cat(list(pred_logits), dim=1)
    if logits.shape[:2] != gt_labels_t.shape:
        raise ValueError(
            f"pred_logits must total [N, R, K] = [{gt_labels_t.shape[0]}, {gt_labels_t.shape[1]}, K] "
            f"over levels, got {list(logits.shape)}"
        )
    gt_labels_target = F.one_hot(gt_labels_t[valid_mask], num_classes=num_classes + 1)[:, :-1]
    loss_cls = sigmoid_focal_loss(
        logits[valid_mask],
        gt_labels_target.to(logits.dtype),
        alpha=focal_loss_alpha,
        gamma=focal_loss_gamma,
        reduction="sum",
    )
    loss_box_reg = _dense_box_regression_loss(
        list(anchors),
        box2box_transform,
        list(pred_anchor_deltas),
        list(gt_boxes),
        pos_mask,
        box_reg_loss_type=box_reg_loss_type,
        smooth_l1_beta=smooth_l1_beta,
    )
    return {"loss_cls": loss_cls / norm, "loss_box_reg": loss_box_reg / norm}


class RetinaNetLogic(DenseDetectorLogic):
    """RetinaNet's anchor labelling, losses and inference, with detectron2's defaults
    (``MODEL.RETINANET.*``). The meta-architecture runs the backbone, the head and the anchor generator and
    hands their outputs here.

    Args:
        num_classes (int): K.
        anchor_matcher (Matcher | None): default ``Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)``.
        box2box_transform (Box2BoxTransform | None): default weights (1, 1, 1, 1).
        focal_loss_alpha (float), focal_loss_gamma (float): focal loss parameters.
        smooth_l1_beta (float): smooth L1 beta of the box loss.
        box_reg_loss_type (str): "smooth_l1", "giou", "diou" or "ciou".
        test_score_thresh (float): candidates need a score strictly above it.
        test_topk_candidates (int): candidates per level before NMS.
        test_nms_thresh (float): class-wise NMS IoU threshold.
        max_detections_per_image (int): detections kept per image.
        loss_normalizer_init (float), loss_normalizer_momentum (float): the foreground-count EMA.
    """

    def __init__(
        self,
        *,
        num_classes: int = 80,
        anchor_matcher: Matcher | None = None,
        box2box_transform: Any = None,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.1,
        box_reg_loss_type: str = "smooth_l1",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        loss_normalizer_init: float = 100.0,
        loss_normalizer_momentum: float = 0.9,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if box_reg_loss_type not in _BOX_LOSSES:
            raise ValueError(f"box_reg_loss_type must be one of {_BOX_LOSSES}, got {box_reg_loss_type!r}")
        self.num_classes = num_classes
        self.anchor_matcher = (
            anchor_matcher
            if anchor_matcher is not None
            else Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
        )
        self.box2box_transform = (
            box2box_transform if box2box_transform is not None else Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
        )
        self.focal_loss_alpha = float(focal_loss_alpha)
        self.focal_loss_gamma = float(focal_loss_gamma)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.box_reg_loss_type = box_reg_loss_type
        self.test_score_thresh = float(test_score_thresh)
        self.test_topk_candidates = int(test_topk_candidates)
        self.test_nms_thresh = float(test_nms_thresh)
        self.max_detections_per_image = int(max_detections_per_image)
        self.loss_normalizer = EMALossNormalizer(loss_normalizer_init, loss_normalizer_momentum)

    def label_anchors(
        self, anchors: Sequence[Boxes], gt_instances: Sequence[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """See :func:`retinanet_label_anchors`."""
        return retinanet_label_anchors(anchors, gt_instances, self.anchor_matcher, self.num_classes)

    def losses(
        self,
        anchors: Sequence[Boxes],
        pred_logits: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pred_anchor_deltas: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
    ) -> dict[str, Tensor]:
        """See :func:`retinanet_losses` (inputs already in ``[N, Ri, K]`` layout)."""
        return retinanet_losses(
            anchors,
            pred_logits,
            gt_labels,
            pred_anchor_deltas,
            gt_boxes,
            num_classes=self.num_classes,
            box2box_transform=self.box2box_transform,
            normalizer=self.loss_normalizer,
            focal_loss_alpha=self.focal_loss_alpha,
            focal_loss_gamma=self.focal_loss_gamma,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )

    def forward_training(
        self,
        anchors: Sequence[Boxes],
        predictions: Sequence[Sequence[Tensor]],
        gt_instances: Sequence[Instances],
    ) -> dict[str, Tensor]:
        """Losses from raw head outputs.

        Args:
            anchors (list[Boxes]): anchors of each level.
            predictions: the head's ``(logits [N, A*K, Hi, Wi] per level, deltas [N, A*4, Hi, Wi] per level)``.
            gt_instances (list[Instances]): ground truth per image.
        """
        pred_logits, pred_anchor_deltas = transpose_dense_predictions(predictions, [self.num_classes, 4])
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)

    def forward_inference(
        self,
        anchors: Sequence[Boxes],
        predictions: Sequence[Sequence[Tensor]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Detections of every image from raw head outputs ``(logits, deltas)`` (per level, ``[N, A*K, H, W]``
        and ``[N, A*4, H, W]``); scores are ``sigmoid(logits)``."""
        pred_logits, pred_anchor_deltas = transpose_dense_predictions(predictions, [self.num_classes, 4])
        results = []
        for img_idx, image_size in enumerate(image_sizes):
            scores_per_image = [x[img_idx].sigmoid() for x in pred_logits]
            deltas_per_image = [x[img_idx] for x in pred_anchor_deltas]
            results.append(
                self.inference_single_image(anchors, scores_per_image, deltas_per_image, image_size)
            )
        return results
