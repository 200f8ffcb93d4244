"""Cascade R-CNN ROI heads (detectron2's ``CascadeROIHeads``): several box stages, each refining the boxes of
the previous one and trained with a higher IoU threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detcore.heads._config import as_tuple
from detcore.heads.box_regression import Box2BoxTransform
from detcore.heads.build import build_component
from detcore.heads.matcher import Matcher
from detcore.heads.poolers import ROIPooler
from detcore.heads.roi_heads.fast_rcnn import (
    FastRCNNOutputLayers,
    FastRCNNOutputLayersConfig,
    fast_rcnn_inference,
)
from detcore.heads.roi_heads.roi_heads import (
    StandardROIHeads,
    StandardROIHeadsConfig,
    _check_targets,
    _with_num_classes,
)
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, ImageList, Instances, pairwise_iou

__all__ = ["CascadeROIHeads", "CascadeROIHeadsConfig"]


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return input.view_as(input)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output * ctx.scale, None


@dataclass(frozen=True)
class CascadeROIHeadsConfig(StandardROIHeadsConfig):
    """Config of :class:`CascadeROIHeads`: :class:`StandardROIHeadsConfig` plus detectron2's
    ``MODEL.ROI_BOX_CASCADE_HEAD`` (``cascade_ious``: IoU threshold of each stage's matcher,
    ``cascade_bbox_reg_weights``: Box2BoxTransform weights of each stage).

    The box predictor must be class agnostic (the default here), and ``cascade_ious[0]`` must equal
    ``iou_thresholds[0]`` (stage 0 uses the ROI heads' own matcher), as detectron2 asserts.
    """

    box_predictor: Any = field(default_factory=lambda: FastRCNNOutputLayersConfig(cls_agnostic_bbox_reg=True))
    cascade_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    cascade_bbox_reg_weights: tuple[tuple[float, ...], ...] = (
        (10.0, 10.0, 5.0, 5.0),
        (20.0, 20.0, 10.0, 10.0),
        (30.0, 30.0, 15.0, 15.0),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "cascade_ious", tuple(float(v) for v in as_tuple(self.cascade_ious, "cascade_ious"))
        )
        weights = as_tuple(self.cascade_bbox_reg_weights, "cascade_bbox_reg_weights")
        object.__setattr__(
            self,
            "cascade_bbox_reg_weights",
            tuple(
                tuple(float(w) for w in as_tuple(ws, f"cascade_bbox_reg_weights[{i}]"))
                for i, ws in enumerate(weights)
            ),
        )


class CascadeROIHeads(StandardROIHeads):
    """detectron2's Cascade R-CNN ROI heads.

    Stage ``k`` pools features at its proposals (stage 0: the sampled proposals; stage ``k > 0``: the boxes
    predicted by stage ``k - 1``, detached and clipped to the image), runs ``box_head[k]`` and
    ``box_predictor[k]`` (class-agnostic regression with its own Box2BoxTransform weights) and, in training,
    is matched to the ground truth with ``proposal_matchers[k]``. The gradient flowing from each stage into
    the pooled features is scaled by ``1 / num_stages``. Inference scores are the mean of the stages' class
    probabilities; the boxes are the last stage's. The mask / keypoint branches are those of
    :class:`StandardROIHeads` (trained on the stage-0 sampled proposals).

    State-dict names: ``box_head.{k}.*``, ``box_predictor.{k}.*``, ``mask_head.*``, ``keypoint_head.*``.

    Args:
        box_in_features (list[str]): feature maps the box branch pools from.
        box_pooler (ROIPooler): shared by every stage.
        box_heads (list[nn.Module]): one box head per stage.
        box_predictors (list[FastRCNNOutputLayers]): one class-agnostic predictor per stage.
        proposal_matchers (list[Matcher]): one matcher per stage (the first also samples the proposals).
        **kwargs: the other :class:`StandardROIHeads` arguments (without ``proposal_matcher``).
    """

    config_class: ClassVar[type] = CascadeROIHeadsConfig

    def __init__(
        self,
        *,
        box_in_features: Sequence[str],
        box_pooler: ROIPooler,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        proposal_matchers: Sequence[Matcher],
        **kwargs: Any,
    ) -> None:
        if "proposal_matcher" in kwargs:
            raise ValueError("CascadeROIHeads takes proposal_matchers (one per stage), not proposal_matcher")
        box_heads = list(as_tuple(box_heads, "box_heads"))
        box_predictors = list(as_tuple(box_predictors, "box_predictors"))
        proposal_matchers = list(as_tuple(proposal_matchers, "proposal_matchers"))
        num_stages = len(box_heads)
        if num_stages == 0 or not (len(box_predictors) == len(proposal_matchers) == num_stages):
            raise ValueError(
                "box_heads, box_predictors and proposal_matchers must be non-empty lists of the same length, "
                f"got {len(box_heads)}, {len(box_predictors)}, {len(proposal_matchers)}"
            )
        for i, m in enumerate(proposal_matchers):
            if not isinstance(m, Matcher):
                raise TypeError(f"proposal_matchers[{i}] must be a Matcher, got {type(m).__name__}")
        for i, p in enumerate(box_predictors):
            if not isinstance(p, FastRCNNOutputLayers):
                raise TypeError(f"box_predictors[{i}] must be a FastRCNNOutputLayers, got {type(p).__name__}")
            box_dim = len(p.box2box_transform.weights)
            if p.bbox_pred.out_features != box_dim:
                raise ValueError(
                    f"box_predictors[{i}] must be class agnostic (bbox_pred with {box_dim} outputs), got "
                    f"{p.bbox_pred.out_features} outputs"
                )
        if kwargs.get("train_on_pred_boxes"):
            raise ValueError("train_on_pred_boxes is not supported by CascadeROIHeads")
        self.num_cascade_stages = num_stages
        super().__init__(
            box_in_features=box_in_features,
            box_pooler=box_pooler,
            box_head=nn.ModuleList(box_heads),
            box_predictor=nn.ModuleList(box_predictors),
            proposal_matcher=proposal_matchers[0],
            **kwargs,
        )
        self.proposal_matchers = proposal_matchers

    @classmethod
    def from_config(
        cls, cfg: CascadeROIHeadsConfig | None, input_shape: Mapping[str, ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs: the StandardROIHeads ones with one box head, predictor and matcher per stage."""
        cfg = cfg if cfg is not None else CascadeROIHeadsConfig()
        ious = list(cfg.cascade_ious)
        weights = list(cfg.cascade_bbox_reg_weights)
        if len(ious) != len(weights) or not ious:
            raise ValueError(
                f"cascade_ious and cascade_bbox_reg_weights must have one entry per stage, got {len(ious)} "
                f"and {len(weights)}"
            )
        if not getattr(cfg.box_predictor, "cls_agnostic_bbox_reg", False):
            raise ValueError("box_predictor.cls_agnostic_bbox_reg must be True for CascadeROIHeads")
        if ious[0] != cfg.iou_thresholds[0]:
            raise ValueError(
                f"cascade_ious[0] ({ious[0]}) must equal iou_thresholds[0] ({cfg.iou_thresholds[0]})"
            )
        ret = StandardROIHeads.from_config(cfg, input_shape)
        for key in ("box_head", "box_predictor", "proposal_matcher", "train_on_pred_boxes"):
            ret.pop(key)
        in_channels = input_shape[cfg.in_features[0]].channels
        r = cfg.box_pooler_resolution
        pooled_shape = ShapeSpec(channels=in_channels, height=r, width=r)
        pred_cfg = _with_num_classes(cfg.box_predictor, cfg.num_classes)
        box_heads, box_predictors, matchers = [], [], []
        for match_iou, bbox_reg_weights in zip(ious, weights):
            box_head = build_component("box_head", cfg.box_head_name, cfg.box_head, pooled_shape)
            kwargs = FastRCNNOutputLayers.from_config(pred_cfg, box_head.output_shape)
            kwargs["box2box_transform"] = Box2BoxTransform(weights=bbox_reg_weights)
            box_heads.append(box_head)
            box_predictors.append(FastRCNNOutputLayers(**kwargs))
            matchers.append(Matcher([match_iou], [0, 1], allow_low_quality_matches=False))
        ret["box_heads"] = box_heads
        ret["box_predictors"] = box_predictors
        ret["proposal_matchers"] = matchers
        return ret

    def forward(
        self,
        images: ImageList | None,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Same contract as :meth:`StandardROIHeads.forward`; the box losses are named
        ``loss_cls_stage{k}`` and ``loss_box_reg_stage{k}``."""
        del images
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a dict name -> Tensor[N, C, H, W], got {type(features).__name__}"
            )
        if not isinstance(proposals, (list, tuple)):
            raise TypeError(f"proposals must be a list of Instances, got {type(proposals).__name__}")
        for i, p in enumerate(proposals):
            if not isinstance(p, Instances) or not p.has("proposal_boxes"):
                raise ValueError(f"proposals[{i}] must be Instances with a 'proposal_boxes' field")
        if self.training:
            _check_targets(targets, len(proposals), self._required_target_fields())
            proposals = self.label_and_sample_proposals(list(proposals), list(targets))
            losses = self._forward_box(features, proposals, list(targets))
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, list(proposals))
        pred_instances = self.forward_with_given_boxes(features, pred_instances)
        return pred_instances, {}

    def _forward_box(
        self, features: dict[str, Tensor], proposals: list[Instances], targets: list[Instances] | None = None
    ) -> Any:
        feats = [features[f] for f in self.box_in_features]
        head_outputs = []  # (predictor, predictions, proposals) of each stage
        prev_pred_boxes: list[Tensor] = []
        image_sizes = [x.image_size for x in proposals]
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_pred_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(feats, proposals, k)
            prev_pred_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            for stage, (predictor, predictions, stage_proposals) in enumerate(head_outputs):
                stage_losses = predictor.losses(predictions, stage_proposals)
                losses.update({f"{name}_stage{stage}": v for name, v in stage_losses.items()})
            return losses
        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [
            sum(list(scores_per_image)) * (1.0 / self.num_cascade_stages)
            for scores_per_image in zip(*scores_per_stage)
        ]
        predictor, predictions, last_proposals = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, last_proposals)
        pred_instances, _ = fast_rcnn_inference(
            list(boxes),
            list(scores),
            image_sizes,
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return pred_instances

    @torch.no_grad()
    def _match_and_label_boxes(
        self, proposals: list[Instances], stage: int, targets: list[Instances]
    ) -> list[Instances]:
        """Label the (unsampled) proposals of ``stage`` with the stage's matcher: ``gt_classes`` (K for
        background) and ``gt_boxes`` (zeros for images without ground truth)."""
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            match_quality_matrix = pairwise_iou(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )
            matched_idxs, proposal_labels = self.proposal_matchers[stage](match_quality_matrix)
            if len(targets_per_image) > 0:
                gt_classes = targets_per_image.gt_classes[matched_idxs]
                gt_classes[proposal_labels == 0] = self.num_classes
                gt_boxes = targets_per_image.gt_boxes[matched_idxs]
            else:
                gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
                gt_boxes = Boxes(targets_per_image.gt_boxes.tensor.new_zeros((len(proposals_per_image), 4)))
            proposals_per_image.gt_classes = gt_classes
            proposals_per_image.gt_boxes = gt_boxes
        return proposals

    def _run_stage(
        self, features: list[Tensor], proposals: list[Instances], stage: int
    ) -> tuple[Tensor, Tensor]:
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        if self.training:
            # each stage's loss reaches the shared features with weight 1 / num_stages
            box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
        box_features = self.box_head[stage](box_features)
        return self.box_predictor[stage](box_features)

    def _create_proposals_from_boxes(
        self, boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """Proposals of the next stage: the detached boxes, clipped (and, in training, non-empty)."""
        proposals = []
        for boxes_i, image_size in zip(boxes, image_sizes):
            boxes_per_image = Boxes._wrap(boxes_i.detach())
            boxes_per_image.clip(image_size)
            if self.training:
                boxes_per_image = boxes_per_image[boxes_per_image.nonempty()]
            proposals.append(Instances(image_size, proposal_boxes=boxes_per_image))
        return proposals
