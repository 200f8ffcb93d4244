"""FCOS meta-architecture (https://arxiv.org/abs/2006.09214), as detectron2's ``FCOS``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn

from detcore.archs.meta_arch.dense_detector import DenseDetector
from detcore.heads.build import build_component
from detcore.heads.dense import FCOSLogic, fcos_anchor_generator

__all__ = ["FCOS"]


class FCOS(DenseDetector):
    """FCOS: a backbone, an :class:`~detcore.heads.dense.FCOSHead` (logits, box deltas, centerness) and one
    point "anchor" per position (:func:`~detcore.heads.dense.fcos_anchor_generator` over the strides of
    ``head_in_features``); labelling, losses and inference are :class:`~detcore.heads.dense.FCOSLogic`'s.

    State-dict names: ``backbone.*`` and ``head.*``.

    Args:
        backbone (Backbone), head (nn.Module), head_in_features (list[str] | None): see :class:`DenseDetector`.
        box2box_transform: box coder (default ``Box2BoxTransformLinear(normalize_by_size=True)``).
        num_classes (int): K.
        center_sampling_radius (float): in strides.
        focal_loss_alpha (float), focal_loss_gamma (float): focal loss parameters.
        test_score_thresh (float), test_topk_candidates (int), test_nms_thresh (float),
            max_detections_per_image (int): inference parameters (detectron2's defaults 0.2, 1000, 0.6, 100).
        pixel_mean / pixel_std (list[float]), input_format (str): see :class:`DenseDetector`.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: Sequence[str] | None = None,
        box2box_transform: Any = None,
        num_classes: int,
        center_sampling_radius: float = 1.5,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        test_score_thresh: float = 0.2,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
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
        shapes = backbone.output_shape()
        self.anchor_generator = fcos_anchor_generator([shapes[f].stride for f in self.head_in_features])
        self.logic = FCOSLogic(
            num_classes=num_classes,
            box2box_transform=box2box_transform,
            center_sampling_radius=center_sampling_radius,
            focal_loss_alpha=focal_loss_alpha,
            focal_loss_gamma=focal_loss_gamma,
            test_score_thresh=test_score_thresh,
            test_topk_candidates=test_topk_candidates,
            test_nms_thresh=test_nms_thresh,
            max_detections_per_image=max_detections_per_image,
        )

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig`` (its ``fcos`` settings)."""
        del input_shape
        f = cfg.fcos
        backbone = cls._backbone_from_config(cfg)
        all_shapes = backbone.output_shape()
        missing = [n for n in f.in_features if n not in all_shapes]
        if missing:
            raise ValueError(f"fcos.in_features {missing} are not backbone outputs ({sorted(all_shapes)})")
        shapes = [all_shapes[n] for n in f.in_features]
        head_cfg = f.head
        if dataclasses.is_dataclass(head_cfg) and any(
            fl.name == "num_classes" for fl in dataclasses.fields(head_cfg)
        ):
            head_cfg = dataclasses.replace(head_cfg, num_classes=f.num_classes)
        return {
            "backbone": backbone,
            "head": build_component("dense_head", f.head_name, head_cfg, shapes, num_anchors=1),
            "head_in_features": list(f.in_features),
            "num_classes": f.num_classes,
            "center_sampling_radius": f.center_sampling_radius,
            "focal_loss_alpha": f.focal_loss_alpha,
            "focal_loss_gamma": f.focal_loss_gamma,
            "test_score_thresh": f.test_score_thresh,
            "test_topk_candidates": f.test_topk_candidates,
            "test_nms_thresh": f.test_nms_thresh,
            "max_detections_per_image": f.max_detections_per_image,
            "pixel_mean": cfg.pixel_mean,
            "pixel_std": cfg.pixel_std,
            "input_format": cfg.input_format,
        }
