"""Keypoint heads of the ROI heads, their loss and inference (detectron2's ``keypoint_head.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.heads._config import as_tuple
from detcore.ops import Conv2d, ConvTranspose2d, ShapeSpec, cat, interpolate
from detcore.structures import Instances, heatmaps_to_keypoints

__all__ = [
    "BaseKeypointRCNNHead",
    "KRCNNConvDeconvUpsampleHead",
    "KRCNNConvDeconvUpsampleHeadConfig",
    "keypoint_rcnn_inference",
    "keypoint_rcnn_loss",
]


def keypoint_rcnn_loss(
    pred_keypoint_logits: Tensor, instances: list[Instances], normalizer: float | None
) -> Tensor:
    """Spatial softmax cross entropy of the keypoint heatmaps, summed over the visible keypoints that fall in
    their proposal, divided by ``normalizer`` (None: the number of those keypoints).

    Args:
        pred_keypoint_logits (Tensor[R, K, S, S]): heatmap logits.
        instances (list[Instances]): per image the proposals (R in total) with ``proposal_boxes`` and
            ``gt_keypoints`` (Keypoints).
        normalizer (float | None): the divisor.

    Returns:
        Tensor: a scalar (0 with a graph when no keypoint is usable).
    """
    if not isinstance(pred_keypoint_logits, Tensor) or pred_keypoint_logits.dim() != 4:
        raise ValueError(
            f"pred_keypoint_logits must be a Tensor[R, K, S, S], got {getattr(pred_keypoint_logits, 'shape', None)}"
        )
    heatmaps = []
    valid = []
    keypoint_side_len = pred_keypoint_logits.shape[2]
    for i, instances_per_image in enumerate(instances):
        if len(instances_per_image) == 0:
            continue
        if not instances_per_image.has("gt_keypoints"):
            raise ValueError(
                f"instances[{i}] has no field 'gt_keypoints', which the keypoint head needs for its loss "
                f"(fields: {sorted(instances_per_image.get_fields())})"
            )
        heatmaps_per_image, valid_per_image = instances_per_image.gt_keypoints.to_heatmap(
            instances_per_image.proposal_boxes.tensor, keypoint_side_len
        )
        heatmaps.append(heatmaps_per_image.view(-1))
        valid.append(valid_per_image.view(-1))

    if len(heatmaps) == 0:
        return pred_keypoint_logits.sum() * 0
    keypoint_targets = cat(heatmaps, dim=0).to(pred_keypoint_logits.device)
    valid_idx = (
        torch.nonzero(cat(valid, dim=0).to(dtype=torch.uint8)).squeeze(1).to(pred_keypoint_logits.device)
    )
    if valid_idx.numel() == 0:
        return pred_keypoint_logits.sum() * 0

    n, k, h, w = pred_keypoint_logits.shape
    logits = pred_keypoint_logits.view(n * k, h * w)
    keypoint_loss = F.cross_entropy(logits[valid_idx], keypoint_targets[valid_idx], reduction="sum")
    if normalizer is None:
        normalizer = valid_idx.numel()
    return keypoint_loss / normalizer


def keypoint_rcnn_inference(pred_keypoint_logits: Tensor, pred_instances: list[Instances]) -> None:
    """Set ``pred_keypoints`` (Tensor[Di, K, 3]: x, y, score) and ``pred_keypoint_heatmaps``
    (Tensor[Di, K, S, S]) on each image's detections, in place (decoded with ``heatmaps_to_keypoints``)."""
    bboxes_flat = cat([b.pred_boxes.tensor for b in pred_instances], dim=0)
    pred_keypoint_logits = pred_keypoint_logits.detach()
    keypoint_results = heatmaps_to_keypoints(pred_keypoint_logits, bboxes_flat.detach())
    num_instances_per_image = [len(i) for i in pred_instances]
    keypoint_results = keypoint_results[:, :, [0, 1, 3]].split(num_instances_per_image, dim=0)
    heatmap_results = pred_keypoint_logits.split(num_instances_per_image, dim=0)
    for kp, hm, instances_per_image in zip(keypoint_results, heatmap_results, pred_instances):
        instances_per_image.pred_keypoints = kp
        instances_per_image.pred_keypoint_heatmaps = hm


class BaseKeypointRCNNHead(nn.Module):
    """Keypoint head base: ``layers(x)`` gives heatmap logits; training returns ``{"loss_keypoint": ...}``,
    inference sets ``pred_keypoints`` and ``pred_keypoint_heatmaps``.

    Args:
        num_keypoints (int): keypoints per instance.
        loss_weight (float): multiplier of the loss.
        loss_normalizer (float | "visible"): "visible" divides by the number of visible keypoints in the
            batch; a float ``x`` divides by ``num_images * x``.
    """

    def __init__(self, *, num_keypoints: int, loss_weight: float = 1.0, loss_normalizer: float | str = 1.0):
        super().__init__()
        if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints <= 0:
            raise ValueError(f"num_keypoints must be a positive int, got {num_keypoints!r}")
        if not (
            loss_normalizer == "visible"
            or (isinstance(loss_normalizer, (int, float)) and not isinstance(loss_normalizer, bool))
        ):
            raise ValueError(f"loss_normalizer must be a float or 'visible', got {loss_normalizer!r}")
        self.num_keypoints = num_keypoints
        self.loss_weight = float(loss_weight)
        self.loss_normalizer = loss_normalizer if loss_normalizer == "visible" else float(loss_normalizer)

    def forward(self, x: Tensor, instances: list[Instances]) -> dict[str, Tensor] | list[Instances]:
        """Args: x (Tensor[R, C, H, W]): pooled features; instances: proposals (training) or detections.
        Returns: ``{"loss_keypoint": Tensor}`` in training, else ``instances``."""
        x = self.layers(x)
        if self.training:
            num_images = len(instances)
            normalizer = None if self.loss_normalizer == "visible" else num_images * self.loss_normalizer
            return {
                "loss_keypoint": keypoint_rcnn_loss(x, instances, normalizer=normalizer) * self.loss_weight
            }
        keypoint_rcnn_inference(x, instances)
        return instances

    def layers(self, x: Tensor) -> Tensor:
        """Heatmap logits from the pooled features."""
        raise NotImplementedError


@dataclass(frozen=True)
class KRCNNConvDeconvUpsampleHeadConfig:
    """Config of :class:`KRCNNConvDeconvUpsampleHead` (detectron2's ``MODEL.ROI_KEYPOINT_HEAD.*``).

    Attributes:
        num_keypoints: keypoints per instance.
        conv_dims: widths of the 3x3 convs.
        loss_weight: keypoint loss weight.
        normalize_loss_by_visible_keypoints: "visible" normaliser; otherwise
            ``batch_size_per_image * positive_fraction`` (the ROI sampler's values below).
        batch_size_per_image / positive_fraction: ``MODEL.ROI_HEADS`` values used by that normaliser.
    """

    num_keypoints: int = 17
    conv_dims: tuple[int, ...] = (512,) * 8
    loss_weight: float = 1.0
    normalize_loss_by_visible_keypoints: bool = True
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_dims", tuple(int(c) for c in as_tuple(self.conv_dims, "conv_dims")))


class KRCNNConvDeconvUpsampleHead(BaseKeypointRCNNHead, nn.Sequential):
    """3x3 convs + ReLU (``conv_fcn{k}``), a 4x4 stride-2 deconv to K heatmaps (``score_lowres``), then x2
    bilinear upsampling (Keypoint R-CNN). Weights: Kaiming normal (fan out), biases 0.

    Args:
        input_shape (ShapeSpec): pooled feature channels.
        num_keypoints (int): keypoints K.
        conv_dims (list[int]): widths of the convs.
        loss_weight, loss_normalizer: see :class:`BaseKeypointRCNNHead`.
    """

    config_class: ClassVar[type] = KRCNNConvDeconvUpsampleHeadConfig

    def __init__(
        self, input_shape: ShapeSpec, *, num_keypoints: int, conv_dims: Sequence[int], **kwargs: Any
    ):
        super().__init__(num_keypoints=num_keypoints, **kwargs)
        if not isinstance(input_shape, ShapeSpec) or input_shape.channels is None:
            raise TypeError(f"input_shape must be a ShapeSpec with channels, got {input_shape!r}")
        conv_dims = [int(c) for c in as_tuple(conv_dims, "conv_dims")]
        if any(c <= 0 for c in conv_dims):
            raise ValueError(f"conv_dims must be positive ints, got {conv_dims}")
        up_scale = 2.0
        in_channels = input_shape.channels
        for idx, layer_channels in enumerate(conv_dims, 1):
            self.add_module(f"conv_fcn{idx}", Conv2d(in_channels, layer_channels, 3, stride=1, padding=1))
            self.add_module(f"conv_fcn_relu{idx}", nn.ReLU())
            in_channels = layer_channels
        deconv_kernel = 4
        self.score_lowres = ConvTranspose2d(
            in_channels, num_keypoints, deconv_kernel, stride=2, padding=deconv_kernel // 2 - 1
        )
        self.up_scale = up_scale
        for name, param in self.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(
        cls, cfg: KRCNNConvDeconvUpsampleHeadConfig | None, input_shape: ShapeSpec
    ) -> dict[str, Any]:
        """Constructor kwargs."""
        cfg = cfg if cfg is not None else KRCNNConvDeconvUpsampleHeadConfig()
        normalizer: float | str = (
            "visible"
            if cfg.normalize_loss_by_visible_keypoints
            else cfg.batch_size_per_image * cfg.positive_fraction
        )
        return {
            "input_shape": input_shape,
            "num_keypoints": cfg.num_keypoints,
            "conv_dims": cfg.conv_dims,
            "loss_weight": cfg.loss_weight,
            "loss_normalizer": normalizer,
        }

    def layers(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)
        return interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)
