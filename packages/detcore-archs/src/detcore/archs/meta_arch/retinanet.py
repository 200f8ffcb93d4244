"""RetinaNet meta-architecture (https://arxiv.org/abs/1708.02002), as detectron2's ``RetinaNet``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn

from detcore.archs.meta_arch.dense_detector import DenseDetector
from detcore.heads.box_regression import Box2BoxTransform
from detcore.heads.build import build_anchor_generator, build_component
from detcore.heads.dense import RetinaNetLogic
from detcore.heads.matcher import Matcher

__all__ = ["RetinaNet"]


class RetinaNet(DenseDetector):
    """RetinaNet: a backbone (usually ResNet + FPN p3..p7), a :class:`~detcore.heads.dense.RetinaNetHead` and an
    anchor generator; anchor labelling, focal / box losses and inference are
    :class:`~detcore.heads.dense.RetinaNetLogic`'s.

    State-dict names: ``backbone.*`` and ``head.*`` (as detectron2; the anchors are non-persistent buffers).

    Args:
        backbone (Backbone), head (nn.Module), head_in_features (list[str] | None): see :class:`DenseDetector`.
        anchor_generator (nn.Module): ``anchor_generator(features) -> list[Boxes]``, one entry per head level
            and the head's number of anchors per position.
        box2box_transform: box coder (default weights (1, 1, 1, 1)).
        anchor_matcher (Matcher | None): default ``Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)``.
        num_classes (int): K.
        focal_loss_alpha (float), focal_loss_gamma (float): focal loss parameters.
        smooth_l1_beta (float): smooth L1 beta (0.0 as detectron2's constructor and Base-RetinaNet.yaml).
        box_reg_loss_type (str): "smooth_l1", "giou", "diou" or "ciou".
        test_score_thresh (float), test_topk_candidates (int), test_nms_thresh (float),
            max_detections_per_image (int): inference parameters.
        pixel_mean / pixel_std (list[float]), input_format (str): see :class:`DenseDetector`.
        vis_period (int): kept for compatibility; no visualisation is done.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: Sequence[str] | None = None,
        anchor_generator: nn.Module,
        box2box_transform: Any = None,
        anchor_matcher: Matcher | None = None,
        num_classes: int,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: str = "smooth_l1",
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.5,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        vis_period: int = 0,
        input_format: str | None = "BGR",
    ) -> None:
        super().__init__(
            backbone=backbone,
            head=head,
            head_in_features=head_in_features,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            input_format=input_format,
        )
        if not callable(anchor_generator):
            raise TypeError(
                f"anchor_generator must be a module mapping features to anchors, got {type(anchor_generator).__name__}"
            )
        n_levels = getattr(anchor_generator, "num_features", None)
        if n_levels is not None and n_levels != len(self.head_in_features):
            raise ValueError(
                f"anchor_generator must have one level per head_in_features ({len(self.head_in_features)}: "
                f"{self.head_in_features}), got {n_levels}"
            )
        self.anchor_generator = anchor_generator
        self.logic = RetinaNetLogic(
            num_classes=num_classes,
            anchor_matcher=anchor_matcher,
            box2box_transform=box2box_transform,
            focal_loss_alpha=focal_loss_alpha,
            focal_loss_gamma=focal_loss_gamma,
            smooth_l1_beta=smooth_l1_beta,
            box_reg_loss_type=box_reg_loss_type,
            test_score_thresh=test_score_thresh,
            test_topk_candidates=test_topk_candidates,
            test_nms_thresh=test_nms_thresh,
            max_detections_per_image=max_detections_per_image,
        )
        self.vis_period = int(vis_period)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig`` (its ``retinanet`` settings)."""
        del input_shape
        r = cfg.retinanet
        backbone = cls._backbone_from_config(cfg)
        all_shapes = backbone.output_shape()
        missing = [f for f in r.in_features if f not in all_shapes]
        if missing:
            raise ValueError(
                f"retinanet.in_features {missing} are not backbone outputs ({sorted(all_shapes)})"
            )
        shapes = [all_shapes[f] for f in r.in_features]
        anchor_generator = build_anchor_generator(r.anchor_generator, shapes, name=r.anchor_generator_name)
        head_cfg = r.head
        if dataclasses.is_dataclass(head_cfg) and any(
            f.name == "num_classes" for f in dataclasses.fields(head_cfg)
        ):
            head_cfg = dataclasses.replace(head_cfg, num_classes=r.num_classes)
        head = build_component(
            "dense_head", r.head_name, head_cfg, shapes, num_anchors=anchor_generator.num_anchors
        )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(r.in_features),
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=r.bbox_reg_weights),
            "anchor_matcher": Matcher(
                list(r.iou_thresholds), list(r.iou_labels), allow_low_quality_matches=True
            ),
            "num_classes": r.num_classes,
            "focal_loss_alpha": r.focal_loss_alpha,
            "focal_loss_gamma": r.focal_loss_gamma,
            "smooth_l1_beta": r.smooth_l1_beta,
            "box_reg_loss_type": r.bbox_reg_loss_type,
            "test_score_thresh": r.test_score_thresh,
            "test_topk_candidates": r.test_topk_candidates,
            "test_nms_thresh": r.test_nms_thresh,
            "max_detections_per_image": r.max_detections_per_image,
            "pixel_mean": cfg.pixel_mean,
            "pixel_std": cfg.pixel_std,
            "vis_period": cfg.vis_period,
            "input_format": cfg.input_format,
        }

    @property
    def anchor_matcher(self) -> Matcher:
        return self.logic.anchor_matcher
