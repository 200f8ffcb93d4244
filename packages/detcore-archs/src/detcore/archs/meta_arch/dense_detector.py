"""Base class of one-stage dense detectors (detectron2's ``DenseDetector``): image preprocessing, the
backbone -> head pass, and the training / inference split with detector post-processing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import detector_postprocess
from detcore.archs.meta_arch.rcnn import _output_size, _RCNNBase
from detcore.structures import ImageList, Instances

__all__ = ["DenseDetector"]


class DenseDetector(_RCNNBase):
    """A one-stage detector: ``backbone`` features of ``head_in_features`` go through ``head``. Subclasses set
    ``anchor_generator`` (features -> per-level anchors) and ``logic`` (a detcore.heads dense-detector logic
    with ``forward_training(anchors, predictions, gt_instances)`` and
    ``forward_inference(anchors, predictions, image_sizes)``), which :meth:`forward_training` and
    :meth:`forward_inference` use.

    State-dict names: ``backbone.*`` and ``head.*`` (pixel_mean/std are non-persistent buffers).

    Args:
        backbone (Backbone): features from the normalised, padded batch (``size_divisibility``,
            ``padding_constraints`` and ``output_shape()`` are used).
        head (nn.Module): maps the list of features (in ``head_in_features`` order) to predictions.
        head_in_features (list[str] | None): backbone outputs fed to the head; default all of them, by
            increasing stride.
        pixel_mean / pixel_std (list[float]): per-channel normalisation.
        input_format (str | None): "BGR" or "RGB", the channel order of the inputs (informational).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: Sequence[str] | None = None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str | None = "BGR",
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module) or not hasattr(backbone, "output_shape"):
            raise TypeError(
                f"backbone must be a Backbone (nn.Module with output_shape()), got {type(backbone).__name__}"
            )
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be an nn.Module, got {type(head).__name__}")
        self.backbone = backbone
        self.head = head
        shapes = backbone.output_shape()
        if head_in_features is None:
            head_in_features = sorted(shapes, key=lambda f: shapes[f].stride)
        head_in_features = list(head_in_features)
        missing = [f for f in head_in_features if f not in shapes]
        if not head_in_features or missing:
            raise ValueError(
                f"head_in_features must be a non-empty list of backbone outputs {sorted(shapes)}, "
                f"got {head_in_features}"
            )
        self.head_in_features = head_in_features
        if input_format not in (None, "BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR', 'RGB' or None, got {input_format!r}")
        self.input_format = input_format
        self._init_pixels(pixel_mean, pixel_std)

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: a dict of losses; inference: ``[{"instances": Instances}]`` per image.

        Args:
            batched_inputs (list[dict]): per image ``image`` (Tensor[C, H, W], uint8 or float), optional
                ``height``/``width`` (output resolution, default the input's), and in training ``instances``
                (ground truth with ``gt_boxes`` and ``gt_classes``).

        Returns:
            dict[str, Tensor] of scalar losses in training; else a list of dicts whose ``instances``
            (``pred_boxes``, ``scores``, ``pred_classes``) are rescaled to ``height``/``width``.
        """
        images = self.preprocess_image(batched_inputs)
        if self.training and any("instances" not in x for x in batched_inputs):
            raise ValueError("in training every input dict must have ground-truth 'instances'")
        features = self.backbone(images.tensor)
        features_list = [features[f] for f in self.head_in_features]
        predictions = self.head(features_list)
        if self.training:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.forward_training(images, features_list, predictions, gt_instances)
        results = self.forward_inference(images, features_list, predictions)
        processed = []
        for results_per_image, input_per_image, image_size in zip(
            results, batched_inputs, images.image_sizes
        ):
            height, width = _output_size(input_per_image, image_size)
            processed.append({"instances": detector_postprocess(results_per_image, height, width)})
        return processed

    def forward_training(
        self,
        images: ImageList,
        features: list[Tensor],
        predictions: Any,
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        """Losses from the head's predictions."""
        anchors = self.anchor_generator(features)
        return self.logic.forward_training(anchors, predictions, gt_instances)

    def forward_inference(
        self, images: ImageList, features: list[Tensor], predictions: Any
    ) -> list[Instances]:
        """Per-image ``pred_boxes`` / ``scores`` / ``pred_classes`` in the frame of the (resized) input."""
        anchors = self.anchor_generator(features)
        return self.logic.forward_inference(anchors, predictions, images.image_sizes)

    @property
    def num_classes(self) -> int:
        return self.logic.num_classes

    @property
    def box2box_transform(self) -> Any:
        return self.logic.box2box_transform
