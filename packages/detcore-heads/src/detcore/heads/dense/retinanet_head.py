"""RetinaNet's prediction head (detectron2's ``RetinaNetHead``), with detectron2's state-dict names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from detcore.heads._config import as_tuple
from detcore.ops import ShapeSpec, get_norm

__all__ = ["CycleBatchNormList", "RetinaNetHead", "RetinaNetHeadConfig"]


class CycleBatchNormList(nn.ModuleList):
    """One BatchNorm per feature level, used in turn (detectron2's ``CycleBatchNormList``).

    The head is shared by all levels but BN statistics are not: call ``i`` uses ``self[i % length]``.
    The affine parameters are shared too (``weight``/``bias`` of this module); the per-level BNs only
    keep running statistics.

    Args:
        length (int): number of feature levels.
        bn_class (type): the BatchNorm class (``nn.BatchNorm2d`` or ``nn.SyncBatchNorm``).
        num_features (int): channels.
    """

    def __init__(self, length: int, bn_class: type = nn.BatchNorm2d, *, num_features: int, **kwargs: Any):
        super().__init__([bn_class(num_features, affine=False, **kwargs) for _ in range(length)])
        self.weight = nn.Parameter(self[0].running_var.new_ones(num_features))
        self.bias = nn.Parameter(self[0].running_var.new_zeros(num_features))
        self._pos = 0

    def forward(self, x: Tensor) -> Tensor:
        ret = self[self._pos](x)
        self._pos = (self._pos + 1) % len(self)
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        return ret * w + b

    def extra_repr(self) -> str:
        return f"affine=True, length={len(self)}"


@dataclass(frozen=True)
class RetinaNetHeadConfig:
    """Config of :class:`RetinaNetHead` (detectron2's ``MODEL.RETINANET`` defaults).

    Attributes:
        num_classes: number of foreground classes.
        num_convs: hidden 3x3 convs per subnet; each keeps the input channels unless ``conv_dims`` is given.
        conv_dims: explicit hidden conv channels (overrides ``num_convs``); empty: ``[C] * num_convs``.
        prior_prob: initial foreground probability of the classifier (sets the cls_score bias).
        norm: normalization after each hidden conv: "" (none), "GN", "BN"/"SyncBN" (one per level), ...
    """

    num_classes: int = 80
    num_convs: int = 4
    conv_dims: tuple[int, ...] = ()
    prior_prob: float = 0.01
    norm: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_dims", tuple(int(c) for c in as_tuple(self.conv_dims, "conv_dims")))


def _check_positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _common_channels(input_shape: Sequence[ShapeSpec]) -> int:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty list of ShapeSpec, got {input_shape!r}")
    channels = {s.channels for s in input_shape}
    if len(channels) != 1 or None in channels:
        raise ValueError(f"input_shape must give the same channels for every level, got {list(input_shape)}")
    return channels.pop()


class RetinaNetHead(nn.Module):
    """The head of RetinaNet: a classification subnet and a box subnet shared by all levels.

    Each subnet is ``len(conv_dims)`` x (3x3 conv [+ norm] + ReLU); then ``cls_score`` (3x3 conv, ``A * K``
    channels) and ``bbox_pred`` (3x3 conv, ``A * 4`` channels). State-dict names as detectron2's:
    ``cls_subnet.{0,2,4,6}.*`` (``{0,3,6,9}`` convs and ``{1,4,7,10}`` norms with a norm),
    ``bbox_subnet.*``, ``cls_score.*``, ``bbox_pred.*``. Convs are initialised N(0, 0.01) with zero bias,
    the ``cls_score`` bias to ``-log((1 - prior_prob) / prior_prob)``.

    Args:
        input_shape (list[ShapeSpec]): one per level, all with the same channels.
        num_classes (int): K, foreground classes.
        num_anchors (int): A, anchors per position (the same on every level).
        conv_dims (list[int]): channels of the hidden convs.
        norm (str): "" for none, "BN"/"SyncBN" (one BN per level, :class:`CycleBatchNormList`) or any name
            :func:`detcore.ops.get_norm` accepts (e.g. "GN").
        prior_prob (float): in (0, 1).
    """

    config_class: ClassVar[type] = RetinaNetHeadConfig

    def __init__(
        self,
        *,
        input_shape: Sequence[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: Sequence[int],
        norm: str = "",
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        in_channels = _common_channels(input_shape)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("num_anchors", num_anchors)
        conv_dims = [int(c) for c in as_tuple(conv_dims, "conv_dims")]
        if not conv_dims or any(c <= 0 for c in conv_dims):
            raise ValueError(f"conv_dims must be a non-empty list of positive ints, got {conv_dims}")
        if not (isinstance(prior_prob, (int, float)) and 0.0 < prior_prob < 1.0):
            raise ValueError(f"prior_prob must be a float in (0, 1), got {prior_prob!r}")
        self._num_features = len(input_shape)
        self.num_classes = num_classes
        self.num_anchors = num_anchors

        if norm in ("BN", "SyncBN"):
            bn_class = nn.BatchNorm2d if norm == "BN" else nn.SyncBatchNorm
            num_levels = self._num_features

            def norm_fn(c: int) -> nn.Module:
                return CycleBatchNormList(length=num_levels, bn_class=bn_class, num_features=c)
        else:

            def norm_fn(c: int) -> nn.Module | None:
                return get_norm(norm, c)

        cls_subnet: list[nn.Module] = []
        bbox_subnet: list[nn.Module] = []
        for cin, cout in zip([in_channels, *conv_dims], conv_dims):
            for subnet in (cls_subnet, bbox_subnet):
                subnet.append(nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1))
                layer = norm_fn(cout) if norm else None
                if layer is not None:
                    subnet.append(layer)
                subnet.append(nn.ReLU())
        self.cls_subnet = nn.Sequential(*cls_subnet)
        self.bbox_subnet = nn.Sequential(*bbox_subnet)
        self.cls_score = nn.Conv2d(
            conv_dims[-1], num_anchors * num_classes, kernel_size=3, stride=1, padding=1
        )
        self.bbox_pred = nn.Conv2d(conv_dims[-1], num_anchors * 4, kernel_size=3, stride=1, padding=1)

        for modules in (self.cls_subnet, self.bbox_subnet, self.cls_score, self.bbox_pred):
            for layer in modules.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, mean=0, std=0.01)
                    nn.init.constant_(layer.bias, 0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(
        cls,
        cfg: RetinaNetHeadConfig | None,
        input_shape: Sequence[ShapeSpec],
        *,
        num_anchors: int | Sequence[int],
    ) -> dict[str, Any]:
        """Constructor kwargs; ``num_anchors`` (one int or one per level, all equal) comes from the anchor
        generator."""
        cfg = cfg if cfg is not None else RetinaNetHeadConfig()
        channels = _common_channels(input_shape)
        if not isinstance(num_anchors, int):
            if len(set(num_anchors)) != 1:
                raise ValueError(
                    f"num_anchors must be the same on every level for {cls.__name__}, got {list(num_anchors)}"
                )
            num_anchors = next(iter(num_anchors))
        conv_dims = list(cfg.conv_dims) if cfg.conv_dims else [channels] * cfg.num_convs
        return {
            "input_shape": list(input_shape),
            "num_classes": cfg.num_classes,
            "num_anchors": num_anchors,
            "conv_dims": conv_dims,
            "norm": cfg.norm,
            "prior_prob": cfg.prior_prob,
        }

    def _check(self, features: Any) -> list[Tensor]:
        if not isinstance(features, (list, tuple)):
            raise TypeError(f"features must be a list of Tensor[N, C, H, W], got {type(features).__name__}")
        if len(features) != self._num_features:
            raise ValueError(
                f"features must have one map per level of this head ({self._num_features}), got {len(features)}"
            )
        return list(features)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Predict for every level.

        Args:
            features (list[Tensor[N, C, Hi, Wi]]): one map per level.

        Returns:
            logits (list[Tensor[N, A*K, Hi, Wi]]): classification logits (channel ``a*K + k``).
            bbox_reg (list[Tensor[N, A*4, Hi, Wi]]): box deltas (channel ``a*4 + j``).
        """
        features = self._check(features)
        logits = []
        bbox_reg = []
        for feature in features:
            logits.append(self.cls_score(self.cls_subnet(feature)))
            bbox_reg.append(self.bbox_pred(self.bbox_subnet(feature)))
        return logits, bbox_reg
