"""RetinaNet meta-architecture (detectron2's ``RetinaNet``): backbone, a dense head on several feature maps,
anchors, and :class:`detcore.heads.dense.RetinaNetLogic` for the losses and inference."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import detector_postprocess
from detcore.archs.meta_arch.rcnn import _output_size, _RCNNBase
from detcore.heads.box_regression import Box2BoxTransform
from detcore.heads.build import build_anchor_generator, build_component
from detcore.heads.dense import RetinaNetLogic
from detcore.heads.matcher import Matcher

__all__ = ["RetinaNet"]


class RetinaNet(_RCNNBase):
    """RetinaNet (focal loss dense detector), with detectron2's inputs, outputs and state-dict names
    (``backbone.*``, ``head.*``; the anchor generator has no state).

    Args:
        backbone (Backbone): features from the normalised, padded batch.
        head (nn.Module): per level ``(logits [N, A*K, Hi, Wi], deltas [N, A*4, Hi, Wi])``.
        head_in_features (list[str]): the feature maps the head runs on.
        anchor_generator (nn.Module): anchors of those maps.
        box2box_transform (Box2BoxTransform), anchor_matcher (Matcher), num_classes (int).
        focal_loss_alpha / focal_loss_gamma / smooth_l1_beta / box_reg_loss_type: losses.
        test_score_thresh / test_topk_candidates / test_nms_thresh / max_detections_per_image: inference.
        pixel_mean / pixel_std (list[float]), vis_period (int), input_format (str): as GeneralizedRCNN.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: Sequence[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher: Matcher,
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
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_in_features = list(head_in_features)
        shapes = backbone.output_shape()
        missing = [f for f in self.head_in_features if f not in shapes]
        if missing:
            raise ValueError(f"head_in_features {missing} are not backbone outputs ({sorted(shapes)})")
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
        self.num_classes = num_classes
        if input_format not in (None, "BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR', 'RGB' or None, got {input_format!r}")
        self.input_format = input_format
        self.vis_period = int(vis_period)
        self._init_pixels(pixel_mean, pixel_std)

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

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: ``{"loss_cls", "loss_box_reg"}``; inference: ``[{"instances": Instances}]`` rescaled to each
        input's ``height``/``width`` (see GeneralizedRCNN.forward for the inputs)."""
        images = self.preprocess_image(batched_inputs)
        all_features = self.backbone(images.tensor)
        features: list[Tensor] = [all_features[f] for f in self.head_in_features]
        predictions = self.head(features)
        anchors = self.anchor_generator(features)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("in training every input dict must have ground-truth 'instances'")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.logic.forward_training(anchors, predictions, gt_instances)
        results = self.logic.forward_inference(anchors, predictions, images.image_sizes)
        processed = []
        for results_per_image, input_per_image, image_size in zip(
            results, batched_inputs, images.image_sizes
        ):
            height, width = _output_size(input_per_image, image_size)
            processed.append({"instances": detector_postprocess(results_per_image, height, width)})
        return processed
