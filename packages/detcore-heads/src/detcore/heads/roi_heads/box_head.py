"""Box heads of the ROI heads: features of the pooled regions (detectron2's ``FastRCNNConvFCHead``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from detcore.heads._config import as_tuple
from detcore.ops import Conv2d, ShapeSpec, c2_msra_fill, c2_xavier_fill, get_norm

__all__ = ["FastRCNNConvFCHead", "FastRCNNConvFCHeadConfig"]


@dataclass(frozen=True)
class FastRCNNConvFCHeadConfig:
    """Config of :class:`FastRCNNConvFCHead` (detectron2's ``MODEL.ROI_BOX_HEAD.*`` defaults).

    Attributes:
        num_conv / conv_dim: number and width of the 3x3 convs.
        num_fc / fc_dim: number and width of the fully connected layers.
        norm: normalisation of the convs ("" for none, "GN", "BN", ...).
    """

    num_conv: int = 0
    conv_dim: int = 256
    num_fc: int = 0
    fc_dim: int = 1024
    norm: str = ""

    @classmethod
    def base_rcnn_fpn(cls) -> FastRCNNConvFCHeadConfig:
        """Base-RCNN-FPN's box head: two fully connected layers of 1024."""
        return cls(num_fc=2)


class FastRCNNConvFCHead(nn.Sequential):
    """A head of 3x3 convs (each with optional norm and ReLU) followed by fully connected layers (with ReLU).

    State-dict names (detectron2's): ``conv{k}.weight`` (+ ``conv{k}.norm.*``), ``fc{k}.{weight,bias}``.
    Convs use Caffe2 MSRA init, fully connected layers Caffe2 Xavier init.

    Args:
        input_shape (ShapeSpec): channels, height and width of the pooled features.
        conv_dims (list[int]): output channels of each conv.
        fc_dims (list[int]): output size of each fully connected layer.
        conv_norm (str | callable): normalisation of the convs ("" for none).
    """

    config_class: ClassVar[type] = FastRCNNConvFCHeadConfig

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: Sequence[int],
        fc_dims: Sequence[int],
        conv_norm: Any = "",
    ) -> None:
        super().__init__()
        if not isinstance(input_shape, ShapeSpec) or input_shape.channels is None:
            raise TypeError(f"input_shape must be a ShapeSpec with channels, got {input_shape!r}")
        conv_dims = [int(c) for c in as_tuple(conv_dims, "conv_dims")]
        fc_dims = [int(c) for c in as_tuple(fc_dims, "fc_dims")]
        if len(conv_dims) + len(fc_dims) == 0:
            raise ValueError("conv_dims and fc_dims must not both be empty")
        if any(c <= 0 for c in conv_dims + fc_dims):
            raise ValueError(f"conv_dims and fc_dims must be positive, got {conv_dims} and {fc_dims}")
        self._output_size: Any = (input_shape.channels, input_shape.height or 1, input_shape.width or 1)
        if conv_dims and (input_shape.height is None or input_shape.width is None):
            raise ValueError(f"input_shape must give height and width for the convs, got {input_shape!r}")

        self.conv_norm_relus: list[nn.Module] = []
        for k, conv_dim in enumerate(conv_dims):
            conv = Conv2d(
                self._output_size[0],
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            self._output_size = (conv_dim, self._output_size[1], self._output_size[2])

        self.fcs: list[nn.Module] = []
        for k, fc_dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            in_size = self._output_size if isinstance(self._output_size, int) else _prod(self._output_size)
            fc = nn.Linear(in_size, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            self.fcs.append(fc)
            self._output_size = fc_dim

        for layer in self.conv_norm_relus:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)

    @classmethod
    def from_config(cls, cfg: FastRCNNConvFCHeadConfig | None, input_shape: ShapeSpec) -> dict[str, Any]:
        """Constructor kwargs from the config and the pooled feature shape."""
        cfg = cfg if cfg is not None else FastRCNNConvFCHeadConfig()
        return {
            "input_shape": input_shape,
            "conv_dims": [cfg.conv_dim] * cfg.num_conv,
            "fc_dims": [cfg.fc_dim] * cfg.num_fc,
            "conv_norm": cfg.norm,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (Tensor[R, C, H, W]): pooled features. Returns: Tensor[R, D] (or [R, C', H, W] with no fc)."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a Tensor[R, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        """The output's ShapeSpec (channels only after fully connected layers)."""
        o = self._output_size
        if isinstance(o, int):
            return ShapeSpec(channels=o)
        return ShapeSpec(channels=o[0], height=o[1], width=o[2])


def _prod(values: Sequence[int]) -> int:
    return int(math.prod(values))
