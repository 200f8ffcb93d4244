"""Pieces shared by one-stage dense detectors (detectron2's ``DenseDetector``): prediction layout,
loss-normaliser EMA and per-level decoding of predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from detcore.ops import batched_nms
from detcore.structures import Boxes, Instances

__all__ = [
    "DenseDetectorLogic",
    "EMALossNormalizer",
    "decode_multi_level_predictions",
    "decode_per_level_predictions",
    "dense_inference_single_image",
    "permute_to_N_HWA_K",
    "transpose_dense_predictions",
]


def permute_to_N_HWA_K(tensor: Tensor, K: int) -> Tensor:
    """Reorder a head output ``[N, A*K, H, W]`` to ``[N, H*W*A, K]`` (the anchors' (row, column, anchor) order).

    Args:
        tensor (Tensor[N, A*K, H, W]): a head output.
        K (int): values per anchor (classes, 4 for deltas, 1 for centerness).

    Returns:
        Tensor[N, H*W*A, K].
    """
    if not isinstance(tensor, Tensor) or tensor.dim() != 4:
        got = list(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(f"tensor must be a Tensor[N, A*K, H, W], got {got}")
    if isinstance(K, bool) or not isinstance(K, int) or K <= 0 or tensor.shape[1] % K != 0:
        raise ValueError(f"K must be a positive int dividing the channels ({tensor.shape[1]}), got {K!r}")
    n, _, h, w = tensor.shape
    tensor = tensor.view(n, -1, K, h, w).permute(0, 3, 4, 1, 2)
    return tensor.reshape(n, -1, K)


def transpose_dense_predictions(
    predictions: Sequence[Sequence[Tensor]], dims_per_anchor: Sequence[int]
) -> list[list[Tensor]]:
    """Apply :func:`permute_to_N_HWA_K` to every level of every kind of head output.

    Args:
        predictions (list[list[Tensor[N, A*Ki, H, W]]]): per kind (logits, deltas, ...), per level.
        dims_per_anchor (list[int]): ``Ki`` of each kind, e.g. ``[num_classes, 4]``.

    Returns:
        list[list[Tensor[N, H*W*A, Ki]]]: the same nesting.
    """
    if len(predictions) != len(dims_per_anchor):
        raise ValueError(
            f"dims_per_anchor must have one entry per kind of prediction ({len(predictions)}), "
            f"got {list(dims_per_anchor)}"
        )
    return [[permute_to_N_HWA_K(x, k) for x in pred] for pred, k in zip(predictions, dims_per_anchor)]


class EMALossNormalizer:
    """Exponential moving average of the number of foreground anchors, used to normalise dense losses
    (detectron2's ``DenseDetector._ema_update``): ``value = momentum * value + (1 - momentum) * max(n, 1)``,
    starting at ``initial_value``.

    Args:
        initial_value (float): value before the first update (RetinaNet: 100, FCOS: 300).
        momentum (float): in [0, 1].
    """

    def __init__(self, initial_value: float = 100.0, momentum: float = 0.9) -> None:
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")
        if not (isinstance(initial_value, (int, float)) and initial_value > 0):
            raise ValueError(f"initial_value must be a positive number, got {initial_value!r}")
        self.initial_value = float(initial_value)
        self.momentum = float(momentum)
        self.value = float(initial_value)

    def __repr__(self) -> str:
        return f"EMALossNormalizer(value={self.value}, momentum={self.momentum})"

    def update(self, num_foreground: int | float) -> float:
        """Fold in this iteration's foreground count (all images together) and return the new value."""
        self.value = self.value * self.momentum + max(float(num_foreground), 1.0) * (1.0 - self.momentum)
        return self.value

    def reset(self) -> None:
        """Back to ``initial_value``."""
        self.value = self.initial_value


def decode_per_level_predictions(
    box2box_transform: Any,
    anchors: Boxes,
    pred_scores: Tensor,
    pred_deltas: Tensor,
    score_thresh: float,
    topk_candidates: int,
    image_size: tuple[int, int],
) -> Instances:
    """Keep scores > ``score_thresh``, then the top ``topk_candidates`` (anchor, class) pairs, and decode
    their boxes.

    Args:
        box2box_transform: decodes ``apply_deltas(deltas [k, 4], anchors [k, 4])``.
        anchors (Boxes): R anchors of one level.
        pred_scores (Tensor[R, K]): probabilities.
        pred_deltas (Tensor[R, 4]): box deltas.
        score_thresh (float): candidates need a score strictly above it.
        topk_candidates (int): at most this many candidates.
        image_size (tuple[int, int]): (height, width) for the returned Instances.

    Returns:
        Instances with ``pred_boxes`` (Boxes), ``scores`` [k], ``pred_classes`` [k] (int64), score-sorted.
    """
    keep_idxs = pred_scores > score_thresh
    scores = pred_scores[keep_idxs]
    topk_idxs = torch.nonzero(keep_idxs)  # [k, 2] (anchor, class)
    num_topk = min(topk_idxs.shape[0], int(topk_candidates))
    scores, idxs = scores.topk(num_topk)
    topk_idxs = topk_idxs[idxs]
    anchor_idxs, classes_idxs = topk_idxs.unbind(dim=1)
    anchors_t = anchors.tensor if isinstance(anchors, Boxes) else anchors
    pred_boxes = box2box_transform.apply_deltas(pred_deltas[anchor_idxs], anchors_t[anchor_idxs])
    return Instances(image_size, pred_boxes=Boxes(pred_boxes), scores=scores, pred_classes=classes_idxs)


def decode_multi_level_predictions(
    box2box_transform: Any,
    anchors: Sequence[Boxes],
    pred_scores: Sequence[Tensor],
    pred_deltas: Sequence[Tensor],
    score_thresh: float,
    topk_candidates: int,
    image_size: tuple[int, int],
) -> Instances:
    """:func:`decode_per_level_predictions` on every level, concatenated (level-major)."""
    if not (len(anchors) == len(pred_scores) == len(pred_deltas)):
        raise ValueError(
            f"anchors, pred_scores and pred_deltas must have one entry per level, got {len(anchors)}, "
            f"{len(pred_scores)} and {len(pred_deltas)}"
        )
    predictions = [
        decode_per_level_predictions(box2box_transform, a, s, d, score_thresh, topk_candidates, image_size)
        for s, d, a in zip(pred_scores, pred_deltas, anchors)
    ]
    return Instances.cat(predictions)


def dense_inference_single_image(
    box2box_transform: Any,
    anchors: Sequence[Boxes],
    pred_scores: Sequence[Tensor],
    pred_deltas: Sequence[Tensor],
    image_size: tuple[int, int],
    *,
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    max_detections_per_image: int,
) -> Instances:
    """Detections of one image: per-level filtering and decoding, class-wise NMS, the best
    ``max_detections_per_image`` (detectron2's ``RetinaNet.inference_single_image``; boxes are not clipped).

    Args:
        box2box_transform: the box coder.
        anchors (list[Boxes]): per level, Ri anchors.
        pred_scores (list[Tensor[Ri, K]]): per level, class probabilities.
        pred_deltas (list[Tensor[Ri, 4]]): per level, box deltas.
        image_size (tuple[int, int]): (height, width).
        score_thresh, topk_candidates, nms_thresh, max_detections_per_image: see the detector.

    Returns:
        Instances with ``pred_boxes``, ``scores`` and ``pred_classes``, by decreasing score.
    """
    pred = decode_multi_level_predictions(
        box2box_transform, anchors, pred_scores, pred_deltas, score_thresh, topk_candidates, image_size
    )
    keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, nms_thresh)
    return pred[keep[:max_detections_per_image]]


class DenseDetectorLogic:
    """Shared inference of one-stage detectors (RetinaNet, FCOS). Subclasses set ``box2box_transform``,
    ``test_score_thresh``, ``test_topk_candidates``, ``test_nms_thresh`` and ``max_detections_per_image``."""

    def inference_single_image(
        self,
        anchors: Sequence[Boxes],
        box_cls: Sequence[Tensor],
        box_delta: Sequence[Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """Detections of one image from per-level scores ``[Ri, K]`` (probabilities) and deltas ``[Ri, 4]``."""
        return dense_inference_single_image(
            self.box2box_transform,
            anchors,
            box_cls,
            box_delta,
            image_size,
            score_thresh=self.test_score_thresh,
            topk_candidates=self.test_topk_candidates,
            nms_thresh=self.test_nms_thresh,
            max_detections_per_image=self.max_detections_per_image,
        )
