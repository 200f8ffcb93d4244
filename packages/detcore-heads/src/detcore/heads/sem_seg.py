"""Semantic segmentation head of Panoptic FPN (detectron2's ``SemSegFPNHead``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.nn import functional as F

from detcore.heads._config import as_tuple
from detcore.ops import Conv2d, ShapeSpec, c2_msra_fill, get_norm

__all__ = ["SemSegFPNHead", "SemSegFPNHeadConfig"]


@dataclass(frozen=True)
class SemSegFPNHeadConfig:
    """Config of :class:`SemSegFPNHead` (detectron2's ``MODEL.SEM_SEG_HEAD`` defaults).

    Attributes:
        in_features: feature maps used (must all be in the input shapes).
        ignore_value: target label ignored by the loss.
        num_classes: output classes (54 for COCO panoptic stuff + "things").
        conv_dims: channels of the per-level 3x3 convs.
        common_stride: output stride all levels are upsampled to before the predictor.
        norm: normalization after each conv ("GN": GroupNorm with 32 groups; "" for none).
        loss_weight: multiplier of "loss_sem_seg".
    """

    in_features: tuple[str, ...] = ("p2", "p3", "p4", "p5")
    ignore_value: int = 255
    num_classes: int = 54
    conv_dims: int = 128
    common_stride: int = 4
    norm: str = "GN"
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_features", as_tuple(self.in_features, "in_features"))


class SemSegFPNHead(nn.Module):
    """Semantic segmentation head of Panoptic FPN (https://arxiv.org/abs/1901.02446).

    Each input level ``f`` of stride ``s`` goes through ``max(1, log2(s) - log2(common_stride))`` blocks of
    (3x3 conv + norm + ReLU, then x2 bilinear upsampling unless ``s == common_stride``), registered as the
    submodule named ``f`` (state-dict keys ``p2.0.weight``, ``p2.0.norm.weight``, ...); the levels are
    summed at ``common_stride`` and a 1x1 conv ``predictor`` gives the class logits. Convs use Caffe2's
    MSRA fill.

    Args:
        input_shape (dict[str, ShapeSpec]): the feature maps used, with channels and strides.
        num_classes (int): output classes.
        conv_dims (int): channels of the hidden convs.
        common_stride (int): stride of the summed maps (a power of 2 that divides every input stride).
        loss_weight (float): multiplier of the loss.
        norm (str): normalization name for :func:`detcore.ops.get_norm` ("" / None: none, convs get a bias).
        ignore_value (int): target label ignored by the cross-entropy.
    """

    config_class: ClassVar[type] = SemSegFPNHeadConfig

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        loss_weight: float = 1.0,
        norm: str | None = "GN",
        ignore_value: int = 255,
    ) -> None:
        super().__init__()
        if not isinstance(input_shape, Mapping) or len(input_shape) == 0:
            raise ValueError(
                f"input_shape must be a non-empty dict of name -> ShapeSpec, got {input_shape!r}"
            )
        for name, v in (
            ("num_classes", num_classes),
            ("conv_dims", conv_dims),
            ("common_stride", common_stride),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for k, v in input_shape.items():
            if not isinstance(v, ShapeSpec) or v.channels is None or v.stride is None:
                raise ValueError(
                    f"input_shape[{k!r}] must be a ShapeSpec with channels and stride, got {v!r}"
                )
            if v.stride < common_stride or v.stride % common_stride != 0:
                raise ValueError(
                    f"input_shape[{k!r}].stride must be a multiple of common_stride={common_stride}, got {v.stride}"
                )
        items = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, _ in items]
        self.ignore_value = int(ignore_value)
        self.common_stride = common_stride
        self.loss_weight = float(loss_weight)

        self.scale_heads: list[nn.Module] = []
        for in_feature, spec in items:
            head_ops: list[nn.Module] = []
            head_length = max(1, int(math.log2(spec.stride) - math.log2(common_stride)))
            for k in range(head_length):
                conv = Conv2d(
                    spec.channels if k == 0 else conv_dims,
                    conv_dims,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, conv_dims),
                    activation=F.relu,
                )
                c2_msra_fill(conv)
                head_ops.append(conv)
                if spec.stride != common_stride:
                    head_ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*head_ops))
            self.add_module(in_feature, self.scale_heads[-1])
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1, stride=1, padding=0)
        c2_msra_fill(self.predictor)

    @classmethod
    def from_config(
        cls, cfg: SemSegFPNHeadConfig | None, input_shape: Mapping[str, ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs; ``input_shape`` may hold more maps than ``cfg.in_features`` uses."""
        cfg = cfg if cfg is not None else SemSegFPNHeadConfig()
        missing = [f for f in cfg.in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"input_shape has no feature(s) {missing} named in in_features; available: {sorted(input_shape)}"
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in cfg.in_features},
            "ignore_value": cfg.ignore_value,
            "num_classes": cfg.num_classes,
            "conv_dims": cfg.conv_dims,
            "common_stride": cfg.common_stride,
            "norm": cfg.norm,
            "loss_weight": cfg.loss_weight,
        }

    def forward(
        self, features: Mapping[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Predict (and, in training, compute the loss).

        Args:
            features (dict[str, Tensor[N, C, Hi, Wi]]): must contain ``in_features``.
            targets (Tensor[N, H, W] int64 | None): per-pixel labels at the input resolution
                (``H = common_stride * H0`` of the finest map), ``ignore_value`` where unknown; needed in
                training.

        Returns:
            In eval mode: (logits Tensor[N, num_classes, H, W] upsampled by ``common_stride``, {}).
            In training mode: (None, {"loss_sem_seg": loss}).
        """
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode (a Tensor[N, H, W] of class labels)")
            return None, self.losses(x, targets)
        x = F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        return x, {}

    def layers(self, features: Mapping[str, Tensor]) -> Tensor:
        """Logits at ``common_stride``: Tensor[N, num_classes, H0, W0]."""
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a dict of name -> Tensor[N, C, H, W], got {type(features).__name__}"
            )
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise ValueError(f"features has no map(s) {missing}; this head uses {self.in_features}")
        x = None
        for i, f in enumerate(self.in_features):
            y = self.scale_heads[i](features[f])
            x = y if x is None else x + y
        return self.predictor(x)

    def losses(self, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Cross-entropy (mean over non-ignored pixels) of the upsampled logits, times ``loss_weight``."""
        predictions = predictions.float()
        predictions = F.interpolate(
            predictions, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        if (
            targets.dim() != 3
            or targets.shape[0] != predictions.shape[0]
            or targets.shape[-2:] != predictions.shape[-2:]
        ):
            raise ValueError(
                f"targets must have shape [N, H, W] = {[predictions.shape[0], *predictions.shape[-2:]]}, "
                f"got {list(targets.shape)}"
            )
        loss = F.cross_entropy(predictions, targets.long(), reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
