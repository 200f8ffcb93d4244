"""Rotated Fast R-CNN (detectron2's ``RROIHeads``, ``RotatedFastRCNNOutputLayers`` and
``fast_rcnn_inference_rotated``): the box branch of :class:`StandardROIHeads` on rotated boxes
``(x_ctr, y_ctr, w, h, angle_degrees)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from detcore.heads.box_regression import Box2BoxTransformRotated
from detcore.heads.build import build_component
from detcore.heads.matcher import Matcher
from detcore.heads.poolers import ROIPooler
from detcore.heads.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    FastRCNNOutputLayersConfig,
    _check_image_shape,
)
from detcore.heads.roi_heads.roi_heads import (
    StandardROIHeads,
    StandardROIHeadsConfig,
    _with_num_classes,
    add_ground_truth_to_proposals,
)
from detcore.ops import ShapeSpec, batched_nms_rotated
from detcore.structures import Instances, RotatedBoxes, pairwise_iou_rotated

__all__ = [
    "RROIHeads",
    "RROIHeadsConfig",
    "RotatedFastRCNNOutputLayers",
    "fast_rcnn_inference_rotated",
    "fast_rcnn_inference_single_image_rotated",
]


def fast_rcnn_inference_rotated(
    boxes: Sequence[Tensor],
    scores: Sequence[Tensor],
    image_shapes: Sequence[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[list[Instances], list[Tensor]]:
    """Rotated detections of each image: clip, threshold, per-class rotated NMS and top-k.

    Args:
        boxes (list[Tensor[Ri, K * 5]] | list[Tensor[Ri, 5]]): predicted rotated boxes of each image,
            class-specific (class k uses columns 5k..5k+4) or class-agnostic.
        scores (list[Tensor[Ri, K + 1]]): class probabilities of each image (last column: background).
        image_shapes (list[tuple[int, int]]): (height, width) of each image (nearly horizontal boxes are
            clipped to it, see :meth:`RotatedBoxes.clip`).
        score_thresh (float): only (box, class) candidates with score > score_thresh are kept.
        nms_thresh (float): rotated IoU threshold of the per-class NMS.
        topk_per_image (int): detections kept per image, by decreasing score (< 0: all).

    Returns:
        instances (list[Instances]): per image ``pred_boxes`` (RotatedBoxes), ``scores`` and
        ``pred_classes``, sorted by decreasing score.
        kept_indices (list[Tensor[D] int64]): the proposal each detection comes from.
    """
    for name, v in (("boxes", boxes), ("scores", scores), ("image_shapes", image_shapes)):
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"{name} must be a list with one entry per image, got {type(v).__name__}")
    if not (len(boxes) == len(scores) == len(image_shapes)):
        raise ValueError(
            f"boxes, scores and image_shapes must have one entry per image, got lengths "
            f"{len(boxes)}, {len(scores)}, {len(image_shapes)}"
        )
    results = [
        fast_rcnn_inference_single_image_rotated(b, s, shape, score_thresh, nms_thresh, topk_per_image)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image_rotated(
    boxes: Tensor,
    scores: Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, Tensor]:
    """:func:`fast_rcnn_inference_rotated` for one image (``boxes`` [R, K * 5] or [R, 5], ``scores`` [R, K + 1])."""
    b = 5
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] % b != 0 or boxes.shape[1] == 0:
        raise ValueError(
            f"boxes must be a Tensor[R, K * 5] or [R, 5], got {getattr(boxes, 'shape', boxes)!r}"
        )
    if not isinstance(scores, Tensor) or scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must be a Tensor[R, K + 1] with R = {boxes.shape[0]} rows, got "
            f"{getattr(scores, 'shape', scores)!r}"
        )
    num_bbox_reg_classes = boxes.shape[1] // b
    if num_bbox_reg_classes != 1 and num_bbox_reg_classes != scores.shape[1] - 1:
        raise ValueError(
            f"boxes has {num_bbox_reg_classes} classes but scores has {scores.shape[1] - 1} (+ background)"
        )
    image_shape = _check_image_shape(image_shape, "image_shape")
    if isinstance(topk_per_image, bool) or not isinstance(topk_per_image, int):
        raise TypeError(f"topk_per_image must be an int, got {topk_per_image!r}")

    valid_mask = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid_mask.all()):
        boxes = boxes[valid_mask]
        scores = scores[valid_mask]
    scores = scores[:, :-1]
    rboxes = RotatedBoxes._wrap(boxes.reshape(-1, b).clone())
    rboxes.clip(image_shape)
    boxes = rboxes.tensor.view(-1, num_bbox_reg_classes, b)  # [R, K or 1, 5]

    filter_mask = scores > score_thresh  # [R, K]
    filter_inds = filter_mask.nonzero()
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0], 0]
    else:
        boxes = boxes[filter_mask]
    scores = scores[filter_mask]

    keep = batched_nms_rotated(boxes, scores, filter_inds[:, 1], float(nms_thresh))
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]

    result = Instances(image_shape)
    result.pred_boxes = RotatedBoxes._wrap(boxes)
    result.scores = scores
    result.pred_classes = filter_inds[:, 1]
    return result, filter_inds[:, 0]


class RotatedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """:class:`FastRCNNOutputLayers` for rotated boxes: ``bbox_pred`` predicts K * 5 (or 5) deltas of a
    :class:`Box2BoxTransformRotated`; inference is :func:`fast_rcnn_inference_rotated`. The box
    regression loss must be "smooth_l1"."""

    def __init__(self, input_shape: ShapeSpec | int, **kwargs: Any) -> None:
        super().__init__(input_shape, **kwargs)
        if not isinstance(self.box2box_transform, Box2BoxTransformRotated):
            raise TypeError(
                f"box2box_transform must be a Box2BoxTransformRotated, got {type(self.box2box_transform).__name__}"
            )
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                f"box_reg_loss_type must be 'smooth_l1' for rotated boxes, got {self.box_reg_loss_type!r}"
            )

    @classmethod
    def from_config(
        cls, cfg: FastRCNNOutputLayersConfig | None, input_shape: ShapeSpec | int
    ) -> dict[str, Any]:
        """Constructor kwargs, with a Box2BoxTransformRotated of ``cfg.bbox_reg_weights`` (5 weights)."""
        cfg = (
            cfg
            if cfg is not None
            else FastRCNNOutputLayersConfig(bbox_reg_weights=(10.0, 10.0, 5.0, 5.0, 1.0))
        )
        weights = cfg.bbox_reg_weights
        ret = super().from_config(
            dataclasses.replace(cfg, bbox_reg_weights=(1.0, 1.0, 1.0, 1.0)), input_shape
        )
        ret["box2box_transform"] = Box2BoxTransformRotated(weights=weights)
        return ret

    def inference(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[Tensor]]:
        """Rotated detections of each image (see :func:`fast_rcnn_inference_rotated`)."""
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [x.image_size for x in proposals]
        return fast_rcnn_inference_rotated(
            list(boxes),
            list(scores),
            image_shapes,
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )


@dataclass(frozen=True)
class RROIHeadsConfig(StandardROIHeadsConfig):
    """Config of :class:`RROIHeads`: :class:`StandardROIHeadsConfig` with an "ROIAlignRotated" box pooler
    and Box2BoxTransformRotated weights ``(10, 10, 5, 5, 1)``; mask / keypoint branches must stay off."""

    box_pooler_type: str = "ROIAlignRotated"
    box_predictor: Any = field(
        default_factory=lambda: FastRCNNOutputLayersConfig(bbox_reg_weights=(10.0, 10.0, 5.0, 5.0, 1.0))
    )


class RROIHeads(StandardROIHeads):
    """detectron2's ``RROIHeads``: :class:`StandardROIHeads` for rotated proposals (box branch only).

    Proposals and ``gt_boxes`` are :class:`RotatedBoxes`; proposals are matched to the ground truth by rotated
    IoU; the pooler must be "ROIAlignRotated" and the predictor a :class:`RotatedFastRCNNOutputLayers`.
    State-dict names: ``box_head.*``, ``box_predictor.*``.

    Args: those of :class:`StandardROIHeads` without the mask / keypoint branches and train_on_pred_boxes.
    """

    config_class: ClassVar[type] = RROIHeadsConfig

    def __init__(self, **kwargs: Any) -> None:
        for k in ("mask_in_features", "keypoint_in_features"):
            if kwargs.get(k) is not None:
                raise ValueError(f"{k} must be None: RROIHeads has no mask / keypoint branches")
        if kwargs.get("train_on_pred_boxes"):
            raise ValueError("train_on_pred_boxes is not supported by RROIHeads")
        super().__init__(**kwargs)
        if self.box_pooler.pooler_type != "ROIAlignRotated":
            raise ValueError(
                f"box_pooler must be an 'ROIAlignRotated' pooler, got {self.box_pooler.pooler_type!r}"
            )
        if not isinstance(self.box_predictor, RotatedFastRCNNOutputLayers):
            raise TypeError(
                f"box_predictor must be a RotatedFastRCNNOutputLayers, got {type(self.box_predictor).__name__}"
            )

    @classmethod
    def from_config(cls, cfg: RROIHeadsConfig | None, input_shape: Mapping[str, ShapeSpec]) -> dict[str, Any]:
        """Constructor kwargs: the rotated box pooler, the registered box head and a rotated predictor."""
        cfg = cfg if cfg is not None else RROIHeadsConfig()
        if cfg.mask_on or cfg.keypoint_on:
            raise ValueError("mask_on and keypoint_on must be False for RROIHeads")
        if cfg.box_pooler_type != "ROIAlignRotated":
            raise ValueError(f"box_pooler_type must be 'ROIAlignRotated', got {cfg.box_pooler_type!r}")
        if not isinstance(input_shape, Mapping):
            raise TypeError(f"input_shape must be a dict name -> ShapeSpec, got {type(input_shape).__name__}")
        missing = [f for f in cfg.in_features if f not in input_shape]
        if missing:
            raise ValueError(f"in_features {missing} are not in input_shape ({sorted(input_shape)})")
        in_features = list(cfg.in_features)
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"in_features must have the same channels, got {channels}")
        r = cfg.box_pooler_resolution
        box_head = build_component(
            "box_head", cfg.box_head_name, cfg.box_head, ShapeSpec(channels=channels.pop(), height=r, width=r)
        )
        pred_kwargs = RotatedFastRCNNOutputLayers.from_config(
            _with_num_classes(cfg.box_predictor, cfg.num_classes), box_head.output_shape
        )
        return {
            "num_classes": cfg.num_classes,
            "batch_size_per_image": cfg.batch_size_per_image,
            "positive_fraction": cfg.positive_fraction,
            "proposal_matcher": Matcher(
                list(cfg.iou_thresholds), list(cfg.iou_labels), allow_low_quality_matches=False
            ),
            "proposal_append_gt": cfg.proposal_append_gt,
            "box_in_features": in_features,
            "box_pooler": ROIPooler(
                output_size=r,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=cfg.box_pooler_sampling_ratio,
                pooler_type=cfg.box_pooler_type,
            ),
            "box_head": box_head,
            "box_predictor": RotatedFastRCNNOutputLayers(**pred_kwargs),
        }

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """:meth:`ROIHeads.label_and_sample_proposals` with rotated IoU."""
        for i, t in enumerate(targets):
            if not isinstance(t.gt_boxes, RotatedBoxes):
                raise TypeError(
                    f"targets[{i}].gt_boxes must be RotatedBoxes, got {type(t.gt_boxes).__name__}"
                )
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        proposals_with_gt = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            has_gt = len(targets_per_image) > 0
            match_quality_matrix = pairwise_iou_rotated(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(
                matched_idxs, matched_labels, targets_per_image.gt_classes
            )
            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes
            if has_gt:
                proposals_per_image.gt_boxes = targets_per_image.gt_boxes[matched_idxs[sampled_idxs]]
            proposals_with_gt.append(proposals_per_image)
        return proposals_with_gt
