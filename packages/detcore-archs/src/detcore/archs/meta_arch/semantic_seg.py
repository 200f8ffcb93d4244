"""Semantic segmentation meta-architecture (detectron2's ``SemanticSegmentor``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import sem_seg_postprocess
from detcore.archs.meta_arch.rcnn import _output_size, _RCNNBase
from detcore.heads.build import build_component
from detcore.structures import ImageList

__all__ = ["SemanticSegmentor", "batch_sem_seg_targets"]


def batch_sem_seg_targets(
    batched_inputs: Sequence[Mapping[str, Any]],
    images: ImageList,
    backbone: nn.Module,
    ignore_value: int,
    device: torch.device,
) -> Tensor:
    """Pad the per-image ``sem_seg`` targets like the images (with ``ignore_value``) and batch them.

    Args:
        batched_inputs (list[dict]): each with ``sem_seg`` (Tensor[H, W] integer class labels, the image's
            H and W).
        images (ImageList): the preprocessed images (for the sizes).
        backbone: gives ``size_divisibility`` and ``padding_constraints``.
        ignore_value (int): label of the padding.
        device: where the result goes.

    Returns:
        Tensor[N, Hp, Wp] int64, the same padded size as ``images.tensor``.
    """
    targets = []
    for i, (x, size) in enumerate(zip(batched_inputs, images.image_sizes)):
        if "sem_seg" not in x:
            raise ValueError(
                f"batched_inputs[{i}] must have a 'sem_seg' ground truth (Tensor[H, W]) in training"
            )
        t = x["sem_seg"]
        if not isinstance(t, Tensor):
            raise TypeError(f"batched_inputs[{i}]['sem_seg'] must be a Tensor[H, W], got {type(t).__name__}")
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"batched_inputs[{i}]['sem_seg'] must hold integer class labels, got {t.dtype}")
        if t.dim() != 2 or tuple(t.shape) != tuple(int(s) for s in size):
            raise ValueError(
                f"batched_inputs[{i}]['sem_seg'] must be a Tensor[H, W] with the image's size "
                f"{[int(s) for s in size]}, got shape {list(t.shape)}"
            )
        targets.append(t.to(device=device, dtype=torch.int64))
    return ImageList.from_tensors(
        targets,
        backbone.size_divisibility,
        pad_value=ignore_value,
        padding_constraints=backbone.padding_constraints,
    ).tensor


class SemanticSegmentor(_RCNNBase):
    """A backbone and a semantic segmentation head (e.g. :class:`~detcore.heads.sem_seg.SemSegFPNHead`).

    State-dict names: ``backbone.*`` and ``sem_seg_head.*``.

    Args:
        backbone (Backbone): features from the normalised, padded batch.
        sem_seg_head (nn.Module): ``sem_seg_head(features, targets) -> (logits [N, C, Hp, Wp] | None,
            losses)``, with an ``ignore_value`` attribute (default 255).
        pixel_mean / pixel_std (list[float]): per-channel normalisation.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module) or not hasattr(backbone, "output_shape"):
            raise TypeError(
                f"backbone must be a Backbone (nn.Module with output_shape()), got {type(backbone).__name__}"
            )
        if not isinstance(sem_seg_head, nn.Module):
            raise TypeError(f"sem_seg_head must be an nn.Module, got {type(sem_seg_head).__name__}")
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self._init_pixels(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig`` (its backbone and ``sem_seg_head``)."""
        del input_shape
        backbone = cls._backbone_from_config(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_component(
                "sem_seg_head", cfg.sem_seg_head_name, cfg.sem_seg_head, backbone.output_shape()
            ),
            "pixel_mean": cfg.pixel_mean,
            "pixel_std": cfg.pixel_std,
        }

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: ``{"loss_sem_seg": Tensor}``; inference: ``[{"sem_seg": Tensor[C, height, width]}]``.

        Args:
            batched_inputs (list[dict]): per image ``image`` (Tensor[C, H, W]), ``sem_seg`` (Tensor[H, W]
                integer labels; required in training, optional in eval) and optional ``height``/``width``
                (output resolution).

        Returns:
            In training a dict of losses; otherwise per image the class logits resized to ``height``/``width``.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        targets = None
        if self.training or "sem_seg" in batched_inputs[0]:
            targets = batch_sem_seg_targets(
                batched_inputs,
                images,
                self.backbone,
                getattr(self.sem_seg_head, "ignore_value", 255),
                self.device,
            )
        results, losses = self.sem_seg_head(features, targets)
        if self.training:
            return losses
        processed = []
        for result, input_per_image, image_size in zip(results, batched_inputs, images.image_sizes):
            height, width = _output_size(input_per_image, image_size)
            processed.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
        return processed
