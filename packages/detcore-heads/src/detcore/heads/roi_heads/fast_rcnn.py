"""Fast R-CNN box predictor, its losses and inference (detectron2's ``FastRCNNOutputLayers`` and
``fast_rcnn_inference``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.heads._config import as_tuple
from detcore.heads.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detcore.ops import ShapeSpec, batched_nms, cat, nonzero_tuple
from detcore.structures import Boxes, Instances

__all__ = [
    "FastRCNNOutputLayers",
    "FastRCNNOutputLayersConfig",
    "fast_rcnn_inference",
    "fast_rcnn_inference_single_image",
]

_LOSS_KEYS = ("loss_cls", "loss_box_reg")


def _as_size(v: Any) -> Any:
    # a symbolic size (torch.export with a dynamic image size) stays symbolic: int() would specialise it
    return v if isinstance(v, torch.SymInt) else int(v)


def _check_image_shape(image_shape: Any, name: str) -> tuple[int, int]:
    if isinstance(image_shape, Tensor):
        image_shape = image_shape.tolist()
    if not isinstance(image_shape, Sequence) or len(image_shape) != 2:
        raise ValueError(f"{name} must be an (height, width) pair, got {image_shape!r}")
    return _as_size(image_shape[0]), _as_size(image_shape[1])


def fast_rcnn_inference(
    boxes: Sequence[Tensor],
    scores: Sequence[Tensor],
    image_shapes: Sequence[tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[list[Instances], list[Tensor]]:
    """Detections of each image: clip, threshold, per-class NMS and top-k (detectron2's ``fast_rcnn_inference``).

    Args:
        boxes (list[Tensor[Ri, K * 4]] | list[Tensor[Ri, 4]]): predicted boxes of each image, class-specific
            (class k uses columns 4k..4k+3) or class-agnostic.
        scores (list[Tensor[Ri, K + 1]]): class probabilities of each image (last column: background).
        image_shapes (list[tuple[int, int]]): (height, width) of each image (boxes are clipped to it).
        score_thresh (float): only (box, class) candidates with score > score_thresh are kept.
        nms_thresh (float): IoU threshold of the per-class NMS (suppressed when IoU > thresh).
        topk_per_image (int): number of detections kept per image, by decreasing score (< 0: all).

    Returns:
        instances (list[Instances]): per image ``pred_boxes`` (Boxes), ``scores`` (Tensor[D]) and
        ``pred_classes`` (Tensor[D] int64), sorted by decreasing score.
        kept_indices (list[Tensor[D] int64]): the proposal each detection comes from (index among the
        proposals with finite boxes and scores).
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
        fast_rcnn_inference_single_image(b, s, shape, score_thresh, nms_thresh, topk_per_image)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def fast_rcnn_inference_single_image(
    boxes: Tensor,
    scores: Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, Tensor]:
    """:func:`fast_rcnn_inference` for one image (``boxes`` Tensor[R, K * 4] or [R, 4], ``scores`` [R, K + 1])."""
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] % 4 != 0 or boxes.shape[1] == 0:
        raise ValueError(
            f"boxes must be a Tensor[R, K * 4] or [R, 4], got {getattr(boxes, 'shape', boxes)!r}"
        )
    if not isinstance(scores, Tensor) or scores.dim() != 2 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must be a Tensor[R, K + 1] with R = {boxes.shape[0]} rows, got "
            f"{getattr(scores, 'shape', scores)!r}"
        )
    num_bbox_reg_classes = boxes.shape[1] // 4
    if num_bbox_reg_classes != 1 and num_bbox_reg_classes != scores.shape[1] - 1:
        raise ValueError(
            f"boxes has {num_bbox_reg_classes} classes but scores has {scores.shape[1] - 1} (+ background)"
        )
    height, width = _check_image_shape(image_shape, "image_shape")
    if not isinstance(score_thresh, (int, float)) or not isinstance(nms_thresh, (int, float)):
        raise TypeError(f"score_thresh and nms_thresh must be floats, got {score_thresh!r}, {nms_thresh!r}")
    if isinstance(topk_per_image, bool) or not isinstance(topk_per_image, int):
        raise TypeError(f"topk_per_image must be an int, got {topk_per_image!r}")

    # Rows with a non-finite box or score are dropped (detectron2). Masking them out of the candidates instead
    # of indexing them away keeps the same candidates in the same order without a branch on the data.
    valid_mask = _finite_rows(boxes, scores)

    scores = scores[:, :-1]
    # Threshold first, then clip only the surviving candidates: the same values as detectron2's
    # clip-everything-then-filter, without touching the R * K boxes that are thrown away.
    filter_mask = (scores > score_thresh) & valid_mask[:, None]  # [R, K]
    filter_inds = filter_mask.nonzero()  # [M, 2] (proposal, class), row-major like boolean indexing
    if num_bbox_reg_classes == 1:
        boxes = boxes[filter_inds[:, 0]]
    else:
        boxes = boxes.view(-1, num_bbox_reg_classes, 4)[filter_mask]
    scores = scores[filter_mask]
    filter_inds = _renumber_valid_rows(filter_inds, valid_mask)
    return _clip_nms_topk(boxes, scores, filter_inds, (height, width), nms_thresh, topk_per_image)


def _is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _finite_rows(*tensors: Tensor) -> Tensor:
    """Tensor[R] bool: True where row r of every ``tensors[i] [R, Ci]`` is finite.

    A finite row sum implies finite entries (inf and nan propagate), so the exact per-element test only runs on
    the rows whose sum is not finite (usually none; a huge but finite row that overflows is one).
    """
    total = tensors[0].sum(dim=1)
    for t in tensors[1:]:
        total = total + t.sum(dim=1)
    finite = torch.isfinite(total)
    if not _is_tracing() and bool(finite.all()):
        return finite  # nothing to check (the general form below would change nothing)
    (check,) = torch.nonzero(~finite, as_tuple=True)
    exact = torch.isfinite(tensors[0][check]).all(dim=1)
    for t in tensors[1:]:
        exact = exact & torch.isfinite(t[check]).all(dim=1)
    return finite.index_put((check,), exact)


def _renumber_valid_rows(filter_inds: Tensor, valid: Tensor) -> Tensor:
    """``filter_inds [M, 2]`` (row, class) with rows counted among the ``valid [R]`` rows only, as if the
    invalid rows had been removed first (detectron2's kept indices)."""
    if not _is_tracing() and bool(valid.all()):
        return filter_inds  # every row valid: the ranks are the rows
    valid_rank = valid.cumsum(0) - 1
    return torch.stack((valid_rank[filter_inds[:, 0]], filter_inds[:, 1]), dim=1)


def _clip_nms_topk(
    boxes: Tensor,
    scores: Tensor,
    filter_inds: Tensor,
    image_shape: tuple[int, int],
    nms_thresh: float,
    topk_per_image: int,
) -> tuple[Instances, Tensor]:
    """The end of :func:`fast_rcnn_inference_single_image` on the candidates: clip, per-class NMS, top-k."""
    height, width = image_shape
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    boxes = torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)

    keep = batched_nms(boxes, scores, filter_inds[:, 1], float(nms_thresh))
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    boxes, scores, filter_inds = boxes[keep], scores[keep], filter_inds[keep]

    result = Instances((height, width))
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = filter_inds[:, 1]
    return result, filter_inds[:, 0]


def _cross_entropy(input: Tensor, target: Tensor) -> Tensor:
    """Mean cross entropy that is 0 (with a graph) for empty targets (detectron2's ``cross_entropy``)."""
    if target.numel() == 0:
        return input.sum() * 0.0
    return F.cross_entropy(input, target, reduction="mean")


@dataclass(frozen=True)
class FastRCNNOutputLayersConfig:
    """Config of :class:`FastRCNNOutputLayers` (detectron2's ``MODEL.ROI_HEADS`` / ``ROI_BOX_HEAD`` defaults).

    Attributes:
        num_classes: foreground classes.
        bbox_reg_weights: Box2BoxTransform weights.
        test_score_thresh / test_nms_thresh / test_topk_per_image: inference post-processing.
        cls_agnostic_bbox_reg: one box per proposal instead of one per class.
        smooth_l1_beta / bbox_reg_loss_type / bbox_reg_loss_weight: box regression loss.
        use_fed_loss / use_sigmoid_ce / fed_loss_freq_weight_power / fed_loss_num_classes: classification loss.
    """

    num_classes: int = 80
    bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    test_score_thresh: float = 0.05
    test_nms_thresh: float = 0.5
    test_topk_per_image: int = 100
    cls_agnostic_bbox_reg: bool = False
    smooth_l1_beta: float = 0.0
    bbox_reg_loss_type: str = "smooth_l1"
    bbox_reg_loss_weight: float = 1.0
    use_fed_loss: bool = False
    use_sigmoid_ce: bool = False
    fed_loss_freq_weight_power: float = 0.5
    fed_loss_num_classes: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "bbox_reg_weights",
            tuple(float(w) for w in as_tuple(self.bbox_reg_weights, "bbox_reg_weights")),
        )


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on the box-head features: class scores (``cls_score``, K + 1 outputs, the last is
    background) and box deltas (``bbox_pred``, K * 4 outputs, or 4 when class agnostic).

    Args:
        input_shape (ShapeSpec | int): the box head's output shape (flattened).
        box2box_transform (Box2BoxTransform): encodes/decodes the deltas.
        num_classes (int): number of foreground classes K.
        test_score_thresh / test_nms_thresh / test_topk_per_image: see :func:`fast_rcnn_inference`.
        cls_agnostic_bbox_reg (bool): predict one box per proposal.
        smooth_l1_beta (float): smooth L1 beta (0: L1).
        box_reg_loss_type (str): "smooth_l1", "giou", "diou" or "ciou".
        loss_weight (float | dict): weight of both losses, or per loss ("loss_cls", "loss_box_reg").
        use_fed_loss (bool): federated loss (needs ``use_sigmoid_ce``).
        use_sigmoid_ce (bool): per-class sigmoid cross entropy instead of softmax cross entropy.
        get_fed_loss_cls_weights (callable | Tensor | None): per-class sampling weights [K] of the fed loss.
        fed_loss_num_classes (int): classes (gt + sampled negatives) the fed loss uses.
    """

    config_class: ClassVar[type] = FastRCNNOutputLayersConfig

    def __init__(
        self,
        input_shape: ShapeSpec | int,
        *,
        box2box_transform: Box2BoxTransform,
        num_classes: int,
        test_score_thresh: float = 0.0,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        loss_weight: float | Mapping[str, float] = 1.0,
        use_fed_loss: bool = False,
        use_sigmoid_ce: bool = False,
        get_fed_loss_cls_weights: Callable[[], Tensor] | Tensor | None = None,
        fed_loss_num_classes: int = 50,
    ) -> None:
        super().__init__()
        if isinstance(input_shape, int) and not isinstance(input_shape, bool):
            input_shape = ShapeSpec(channels=input_shape)
        if not isinstance(input_shape, ShapeSpec) or input_shape.channels is None:
            raise TypeError(f"input_shape must be a ShapeSpec with channels or an int, got {input_shape!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not hasattr(box2box_transform, "apply_deltas") or not hasattr(box2box_transform, "weights"):
            raise TypeError(
                f"box2box_transform must be a Box2BoxTransform (with weights), got {type(box2box_transform).__name__}"
            )
        if box_reg_loss_type not in ("smooth_l1", "giou", "diou", "ciou"):
            raise ValueError(
                f"box_reg_loss_type must be 'smooth_l1', 'giou', 'diou' or 'ciou', got {box_reg_loss_type!r}"
            )
        self.num_classes = num_classes
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_bbox_reg_classes = 1 if cls_agnostic_bbox_reg else num_classes
        box_dim = len(box2box_transform.weights)
        self.bbox_pred = nn.Linear(input_size, num_bbox_reg_classes * box_dim)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)

        self.box2box_transform = box2box_transform
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.test_score_thresh = float(test_score_thresh)
        self.test_nms_thresh = float(test_nms_thresh)
        self.test_topk_per_image = int(test_topk_per_image)
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, (int, float)) and not isinstance(loss_weight, bool):
            loss_weight = {"loss_cls": float(loss_weight), "loss_box_reg": float(loss_weight)}
        if not isinstance(loss_weight, Mapping) or any(k not in _LOSS_KEYS for k in loss_weight):
            raise ValueError(
                f"loss_weight must be a float or a dict with keys in {_LOSS_KEYS}, got {loss_weight!r}"
            )
        self.loss_weight = dict(loss_weight)
        self.use_fed_loss = bool(use_fed_loss)
        self.use_sigmoid_ce = bool(use_sigmoid_ce)
        self.fed_loss_num_classes = int(fed_loss_num_classes)
        if self.use_fed_loss:
            if not self.use_sigmoid_ce:
                raise ValueError("use_fed_loss=True needs use_sigmoid_ce=True")
            if get_fed_loss_cls_weights is None:
                raise ValueError(
                    "get_fed_loss_cls_weights must be given (callable or Tensor[K]) with use_fed_loss"
                )
            weights = (
                get_fed_loss_cls_weights() if callable(get_fed_loss_cls_weights) else get_fed_loss_cls_weights
            )
            weights = torch.as_tensor(weights, dtype=torch.float32)
            if weights.shape != (num_classes,):
                raise ValueError(
                    f"get_fed_loss_cls_weights must give a Tensor[{num_classes}] (one weight per class), "
                    f"got shape {list(weights.shape)}"
                )
            self.register_buffer("fed_loss_cls_weights", weights)

    @classmethod
    def from_config(
        cls, cfg: FastRCNNOutputLayersConfig | None, input_shape: ShapeSpec | int
    ) -> dict[str, Any]:
        """Constructor kwargs (the fed loss weights, which need dataset statistics, are not in the config:
        pass ``get_fed_loss_cls_weights`` yourself when ``use_fed_loss`` is on)."""
        cfg = cfg if cfg is not None else FastRCNNOutputLayersConfig()
        return {
            "input_shape": input_shape,
            "box2box_transform": Box2BoxTransform(weights=cfg.bbox_reg_weights),
            "num_classes": cfg.num_classes,
            "cls_agnostic_bbox_reg": cfg.cls_agnostic_bbox_reg,
            "smooth_l1_beta": cfg.smooth_l1_beta,
            "test_score_thresh": cfg.test_score_thresh,
            "test_nms_thresh": cfg.test_nms_thresh,
            "test_topk_per_image": cfg.test_topk_per_image,
            "box_reg_loss_type": cfg.bbox_reg_loss_type,
            "loss_weight": {"loss_box_reg": cfg.bbox_reg_loss_weight},
            "use_fed_loss": cfg.use_fed_loss,
            "use_sigmoid_ce": cfg.use_sigmoid_ce,
            "fed_loss_num_classes": cfg.fed_loss_num_classes,
        }

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x (Tensor[R, D] or [R, C, H, W]): box-head features (flattened).

        Returns:
            scores (Tensor[R, K + 1]) logits and proposal_deltas (Tensor[R, K * 4] or [R, 4]).
        """
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a Tensor[R, D] or [R, C, H, W], got {getattr(x, 'shape', x)!r}")
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    # ---- losses ----
    def losses(self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]) -> dict[str, Tensor]:
        """``loss_cls`` (mean over sampled regions) and ``loss_box_reg`` (sum over foreground regions divided
        by the number of sampled regions), each times its loss weight.

        Args:
            predictions: ``(scores [R, K + 1], proposal_deltas [R, K * 4])`` from :meth:`forward`.
            proposals (list[Instances]): the sampled proposals of each image (R in total), with
                ``proposal_boxes``, ``gt_classes`` (K for background) and, where there is foreground,
                ``gt_boxes``.
        """
        scores, proposal_deltas = predictions
        for i, p in enumerate(proposals):
            if not p.has("gt_classes") or not p.has("proposal_boxes"):
                raise ValueError(
                    f"proposals[{i}] must have fields 'proposal_boxes' and 'gt_classes' for the box predictor "
                    f"losses (FastRCNNOutputLayers), got {sorted(p.get_fields())}"
                )
        if len(proposals):
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0
            )
        else:
            gt_classes = torch.empty(0, dtype=torch.int64, device=scores.device)
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
        if gt_classes.numel() != scores.shape[0]:
            raise ValueError(
                f"predictions have {scores.shape[0]} rows but the proposals have {gt_classes.numel()} regions"
            )
        if self.use_sigmoid_ce:
            loss_cls = self.sigmoid_cross_entropy_loss(scores, gt_classes)
        else:
            loss_cls = _cross_entropy(scores, gt_classes)
        losses = {
            "loss_cls": loss_cls,
            "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, gt_classes),
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    @staticmethod
    def get_fed_loss_classes(
        gt_classes: Tensor, num_fed_loss_classes: int, num_classes: int, weight: Tensor
    ) -> Tensor:
        """Classes of the federated loss: the gt classes plus negatives sampled with probability ``weight``
        (without replacement) up to ``num_fed_loss_classes``."""
        unique_gt_classes = torch.unique(gt_classes)
        prob = unique_gt_classes.new_ones(num_classes + 1).float()
        prob[-1] = 0
        if len(unique_gt_classes) < num_fed_loss_classes:
            prob[:num_classes] = weight.float().clone()
            prob[unique_gt_classes] = 0
            sampled_negative_classes = torch.multinomial(
                prob, num_fed_loss_classes - len(unique_gt_classes), replacement=False
            )
            return torch.cat([unique_gt_classes, sampled_negative_classes])
        return unique_gt_classes

    def sigmoid_cross_entropy_loss(self, pred_class_logits: Tensor, gt_classes: Tensor) -> Tensor:
        """Per-class binary cross entropy over the K foreground logits, summed and divided by R (optionally
        restricted to the fed-loss classes)."""
        if pred_class_logits.numel() == 0:
            return pred_class_logits.new_zeros([1])[0]
        n = pred_class_logits.shape[0]
        k = pred_class_logits.shape[1] - 1
        target = pred_class_logits.new_zeros(n, k + 1)
        target[torch.arange(len(gt_classes), device=gt_classes.device), gt_classes] = 1
        target = target[:, :k]
        cls_loss = F.binary_cross_entropy_with_logits(pred_class_logits[:, :-1], target, reduction="none")
        if self.use_fed_loss:
            fed_loss_classes = self.get_fed_loss_classes(
                gt_classes,
                num_fed_loss_classes=self.fed_loss_num_classes,
                num_classes=k,
                weight=self.fed_loss_cls_weights,
            )
            mask = fed_loss_classes.new_zeros(k + 1)
            mask[fed_loss_classes] = 1
            weight: Tensor | float = mask[:k].view(1, k).expand(n, k).float()
        else:
            weight = 1
        return torch.sum(cls_loss * weight) / n

    def box_reg_loss(
        self, proposal_boxes: Tensor, gt_boxes: Tensor, pred_deltas: Tensor, gt_classes: Tensor
    ) -> Tensor:
        """Box regression loss of the foreground regions, divided by the number of regions R.

        Args:
            proposal_boxes (Tensor[R, 4]), gt_boxes (Tensor[R, 4]): XYXY.
            pred_deltas (Tensor[R, K * 4] or [R, 4]), gt_classes (Tensor[R] int64).
        """
        box_dim = proposal_boxes.shape[1]
        fg_inds = nonzero_tuple((gt_classes >= 0) & (gt_classes < self.num_classes))[0]
        if pred_deltas.shape[1] == box_dim:
            fg_pred_deltas = pred_deltas[fg_inds]
        else:
            fg_pred_deltas = pred_deltas.view(-1, self.num_classes, box_dim)[fg_inds, gt_classes[fg_inds]]
        num_fg = fg_inds.numel()
        loss_box_reg = _dense_box_regression_loss(
            [proposal_boxes[fg_inds]],
            self.box2box_transform,
            [fg_pred_deltas.unsqueeze(0)],
            [gt_boxes[fg_inds]],
            torch.ones((1, num_fg), dtype=torch.bool, device=pred_deltas.device),
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        if num_fg == 0:  # keep the graph (and a finite 0) when nothing is foreground
            loss_box_reg = loss_box_reg + pred_deltas.sum() * 0.0
        return loss_box_reg / max(gt_classes.numel(), 1.0)

    # ---- inference ----
    def inference(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[Tensor]]:
        """Detections of each image (see :func:`fast_rcnn_inference`), in the frame of ``image_size``.

        Same result as :func:`fast_rcnn_inference` on :meth:`predict_boxes` and :meth:`predict_probs`; when the
        proposals and deltas are finite and bounded (so every decoded box is finite), only the (proposal, class)
        candidates above the score threshold are decoded.
        """
        fast = self._inference_decoding_candidates(predictions, proposals)
        if fast is not None:
            return fast
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [x.image_size for x in proposals]
        return fast_rcnn_inference(
            list(boxes),
            list(scores),
            image_shapes,
            self.test_score_thresh,
            self.test_nms_thresh,
            self.test_topk_per_image,
        )

    def _inference_decoding_candidates(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[Tensor]] | None:
        """:meth:`inference` decoding only the candidates; None for a box transform other than
        :class:`Box2BoxTransform` (then the general path decodes every proposal for every class)."""
        if type(self.box2box_transform) is not Box2BoxTransform or not len(proposals):
            return None
        _, proposal_deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        if proposal_boxes.shape[0] != proposal_deltas.shape[0] or proposal_deltas.shape[1] % 4 != 0:
            return None
        probs = self.predict_probs(predictions, proposals)
        num_per_image = [p.__len__() for p in proposals]
        results, kept = [], []
        for probs_i, deltas_i, boxes_i, p in zip(
            probs, proposal_deltas.split(num_per_image), proposal_boxes.split(num_per_image), proposals
        ):
            height, width = _check_image_shape(p.image_size, "image_size")
            # Rows are dropped as in detectron2 (a non-finite probability, or a non-finite decoded box of
            # any class) by masking them out of the candidates, with no branch on the data.
            valid = _finite_rows(probs_i) & self._rows_decoding_finite(deltas_i, boxes_i)
            cls_scores = probs_i[:, :-1]
            filter_mask = (cls_scores > self.test_score_thresh) & valid[:, None]
            filter_inds = filter_mask.nonzero()
            num_bbox_reg_classes = deltas_i.shape[1] // 4
            if num_bbox_reg_classes == 1:
                cand_deltas = deltas_i[filter_inds[:, 0]]
            else:
                cand_deltas = deltas_i.view(-1, num_bbox_reg_classes, 4)[filter_mask]
            cand_boxes = self.box2box_transform.apply_deltas(cand_deltas, boxes_i[filter_inds[:, 0]])
            filter_inds = _renumber_valid_rows(filter_inds, valid)
            r, k = _clip_nms_topk(
                cand_boxes,
                cls_scores[filter_mask],
                filter_inds,
                (height, width),
                self.test_nms_thresh,
                self.test_topk_per_image,
            )
            results.append(r)
            kept.append(k)
        return results, kept

    def _rows_decoding_finite(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Tensor[R] bool: True where the boxes decoded from ``deltas [R, K*4]`` and ``boxes [R, 4]`` are
        finite for every class. With |coordinates| and |deltas| below 1e15 they are (exp(dw) is clamped), so
        only the other rows (usually none) are decoded to check."""
        bound = 1e15
        # NaN propagates through amax, so a row with a NaN is not "bounded" (and is checked)
        bounded = (deltas.abs().amax(dim=1) < bound) & (boxes.abs().amax(dim=1) < bound)
        if not _is_tracing() and bool(bounded.all()):
            return bounded  # nothing to decode (the general form below would change nothing)
        (unbounded,) = torch.nonzero(~bounded, as_tuple=True)
        decoded = self.box2box_transform.apply_deltas(deltas[unbounded], boxes[unbounded])
        return bounded.index_put((unbounded,), torch.isfinite(decoded).all(dim=1))

    def predict_boxes_for_gt_classes(
        self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]
    ) -> list[Tensor]:
        """Per image the box of each proposal for its ``gt_classes`` (Tensor[Ri, 4])."""
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        n, b = proposal_boxes.shape
        predict_boxes = self.box2box_transform.apply_deltas(proposal_deltas, proposal_boxes)  # [R, K*B]
        k = predict_boxes.shape[1] // b
        if k > 1:
            gt_classes = torch.cat([p.gt_classes for p in proposals], dim=0)
            gt_classes = gt_classes.clamp_(0, k - 1)
            predict_boxes = predict_boxes.view(n, k, b)[
                torch.arange(n, device=predict_boxes.device), gt_classes
            ]
        return list(predict_boxes.split([p.__len__() for p in proposals]))

    def predict_boxes(self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]) -> list[Tensor]:
        """Per image the decoded boxes (Tensor[Ri, K * 4] or [Ri, 4]) of each proposal."""
        if not len(proposals):
            return []
        _, proposal_deltas = predictions
        num_prop_per_image = [p.__len__() for p in proposals]
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        predict_boxes = self.box2box_transform.apply_deltas(proposal_deltas, proposal_boxes)
        return list(predict_boxes.split(num_prop_per_image))

    def predict_probs(self, predictions: tuple[Tensor, Tensor], proposals: list[Instances]) -> list[Tensor]:
        """Per image the class probabilities (Tensor[Ri, K + 1]): softmax, or sigmoid with sigmoid CE."""
        scores, _ = predictions
        num_inst_per_image = [p.__len__() for p in proposals]
        probs = scores.sigmoid() if self.use_sigmoid_ce else F.softmax(scores, dim=-1)
        return list(probs.split(num_inst_per_image, dim=0))
