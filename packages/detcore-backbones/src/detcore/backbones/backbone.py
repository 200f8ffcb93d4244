"""The abstract :class:`Backbone` every detcore feature extractor derives from (detectron2's interface)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any

from torch import Tensor, nn

from detcore.ops import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Abstract base class for network backbones.

    A subclass computes a dict of named NCHW feature maps from an image batch and describes them with
    ``_out_features`` (names, in output order), ``_out_feature_channels`` and ``_out_feature_strides``
    (dicts keyed by name), from which :meth:`output_shape` is derived.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Compute the features.

        Returns:
            dict[str, Tensor[N, C, H, W]]: feature name (e.g. "res2", "p3") -> feature map.
        """

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (0: no requirement).

        Typically non-zero for encoder/decoder networks with lateral connections (e.g. FPN), whose bottom-up
        and top-down feature maps must have matching sizes.
        """
        return 0

    @property
    def padding_constraints(self) -> dict[str, int]:
        """Extra padding requirements for the input batch, e.g. ``{"square_size": 1024}`` ({} when none)."""
        return {}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every output feature.

        Returns:
            dict[str, ShapeSpec]: feature name -> ShapeSpec(channels=..., stride=...).
        """
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def fuse_for_inference(self, channels_last: bool = True) -> Backbone:
        """Fold every FrozenBatchNorm2d into the conv before it (in place) for faster inference.

        See :func:`detcore.backbones.fusion.fuse_frozen_batchnorm`. The outputs stay equal within float
        tolerance; the folded model is for inference only (its norms are gone).

        Args:
            channels_last: also convert the weights to ``torch.channels_last`` memory format (faster convs on
                CPU and on GPUs with tensor cores). Inputs may stay NCHW-contiguous: a conv with channels-last
                weights returns channels-last outputs, so the features come back channels-last (same values).

        Returns:
            Backbone: this module.
        """
        from detcore.backbones.fusion import fuse_frozen_batchnorm

        return fuse_frozen_batchnorm(self, channels_last=channels_last)
