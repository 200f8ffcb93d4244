"""FCOS's prediction head (detectron2's ``FCOSHead``): RetinaNet's head with one anchor per position and a
centerness branch on the box subnet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from detcore.heads._config import as_tuple
from detcore.heads.dense.retinanet_head import RetinaNetHead, _common_channels
from detcore.ops import ShapeSpec

__all__ = ["FCOSHead", "FCOSHeadConfig"]


@dataclass(frozen=True)
class FCOSHeadConfig:
    """Config of :class:`FCOSHead` (detectron2's ``configs/common/models/fcos.py``).

    Attributes:
        num_classes: number of foreground classes.
        num_convs: hidden 3x3 convs per subnet (channels of the input unless ``conv_dims`` is given).
        conv_dims: explicit hidden conv channels; empty: ``[C] * num_convs``.
        prior_prob: initial foreground probability of the classifier.
        norm: normalization after each hidden conv ("GN": GroupNorm with 32 groups).
    """

    num_classes: int = 80
    num_convs: int = 4
    conv_dims: tuple[int, ...] = ()
    prior_prob: float = 0.01
    norm: str = "GN"

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_dims", tuple(int(c) for c in as_tuple(self.conv_dims, "conv_dims")))


class FCOSHead(RetinaNetHead):
    """The FCOS head: :class:`RetinaNetHead` with ``num_anchors=1`` plus ``ctrness``, a 3x3 conv on the box
    subnet's features predicting one centerness logit per position (N(0, 0.01) weights, zero bias).

    Args:
        input_shape (list[ShapeSpec]): one per level, all with the same channels.
        conv_dims (list[int]): channels of the hidden convs.
        **kwargs: ``num_classes``, ``norm``, ``prior_prob`` as in :class:`RetinaNetHead`.
    """

    config_class: ClassVar[type] = FCOSHeadConfig

    def __init__(self, *, input_shape: Sequence[ShapeSpec], conv_dims: Sequence[int], **kwargs: Any) -> None:
        if "num_anchors" in kwargs and kwargs.pop("num_anchors") != 1:
            raise ValueError("num_anchors must be 1 for FCOSHead (one point per position)")
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_anchors=1, **kwargs)
        last = [int(c) for c in as_tuple(conv_dims, "conv_dims")][-1]
        self.ctrness = nn.Conv2d(last, 1, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.ctrness.weight, std=0.01)
        nn.init.constant_(self.ctrness.bias, 0)

    @classmethod
    def from_config(  # type: ignore[override]
        cls, cfg: FCOSHeadConfig | None, input_shape: Sequence[ShapeSpec], *, num_anchors: Any = 1
    ) -> dict[str, Any]:
        """Constructor kwargs (``num_anchors`` is accepted for the "dense_head" interface; it must be 1)."""
        cfg = cfg if cfg is not None else FCOSHeadConfig()
        counts = [num_anchors] if isinstance(num_anchors, int) else list(num_anchors)
        if any(n != 1 for n in counts):
            raise ValueError(f"num_anchors must be 1 for FCOSHead, got {num_anchors!r}")
        channels = _common_channels(input_shape)
        conv_dims = list(cfg.conv_dims) if cfg.conv_dims else [channels] * cfg.num_convs
        return {
            "input_shape": list(input_shape),
            "num_classes": cfg.num_classes,
            "conv_dims": conv_dims,
            "norm": cfg.norm,
            "prior_prob": cfg.prior_prob,
        }

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:  # type: ignore[override]
        """Predict for every level.

        Args:
            features (list[Tensor[N, C, Hi, Wi]]): one map per level.

        Returns:
            logits (list[Tensor[N, K, Hi, Wi]]), bbox_reg (list[Tensor[N, 4, Hi, Wi]]: distances to the
            four sides, in units of the level's stride before ReLU) and ctrness (list[Tensor[N, 1, Hi, Wi]]).
        """
        features = self._check(features)
        logits = []
        bbox_reg = []
        ctrness = []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            bbox_feature = self.bbox_subnet(feature)
            bbox_reg.append(self.bbox_pred(bbox_feature))
            ctrness.append(self.ctrness(bbox_feature))
        return logits, bbox_reg, ctrness
