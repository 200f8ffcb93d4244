"""Atrous Spatial Pyramid Pooling (DeepLab v3), detectron2's ``layers.ASPP``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.ops.layers.batch_norm import get_norm
from detcore.ops.layers.blocks import DepthwiseSeparableConv2d
from detcore.ops.layers.weight_init import c2_xavier_fill
from detcore.ops.layers.wrappers import Conv2d

__all__ = ["ASPP"]


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling.

    Five parallel branches on the input, concatenated along channels and projected back:

    - ``convs[0]``: 1x1 conv + norm + activation;
    - ``convs[1..3]``: 3x3 convs with the three ``dilations`` (padding = dilation) + norm + activation, or
      :class:`DepthwiseSeparableConv2d` with norm and activation after both convs when
      ``use_depthwise_separable_conv``;
    - ``convs[4]``: image pooling: average pooling (global, or ``pool_kernel_size`` with stride 1), a 1x1
      conv with bias and activation but no norm (the pooled map is 1x1 in training), then bilinear
      upsampling (``align_corners=False``) back to the input size;
    - ``project``: 1x1 conv from ``5 * out_channels`` to ``out_channels`` + norm + activation, then dropout
      when ``dropout > 0``.

    Convolutions have a bias only when ``norm`` is "" or None (except the pooling branch, which always
    has one). Weights use :func:`c2_xavier_fill`; the depthwise separable branches use their own
    initialisation. State-dict names equal detectron2's (``convs.0.weight``, ``convs.1.norm.weight``,
    ``convs.4.1.weight``, ``project.weight``, ...).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels (of every branch and of the projection).
        dilations (Sequence[int]): exactly 3 dilations of the atrous branches, e.g. (6, 12, 18).
        norm (str | Callable | None): normalization of all convs except the pooling branch's, see
            :func:`get_norm`.
        activation (Callable[[Tensor], Tensor] | None): activation after every conv (deep-copied per conv).
        pool_kernel_size (tuple[int, int] | None): None for global average pooling; else the (kh, kw)
            average-pooling window. Input height and width must then be multiples of kh and kw. Setting
            it to the (fixed) training feature size makes training use global pooling while inference on
            larger inputs keeps the same window.
        dropout (float): dropout probability on the output, in [0, 1) (DeepLab uses 0.1).
        use_depthwise_separable_conv (bool): use depthwise separable convs for the atrous branches.

    Shape:
        x (Tensor[N, in_channels, H, W]) -> Tensor[N, out_channels, H, W].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        *,
        norm: str | Callable[[int], nn.Module] | None,
        activation: Callable[[Tensor], Tensor] | None,
        pool_kernel_size: Sequence[int] | None = None,
        dropout: float = 0.0,
        use_depthwise_separable_conv: bool = False,
    ) -> None:
        super().__init__()
        if len(dilations) != 3:
            raise ValueError(f"dilations must be a list of 3 dilations, got {list(dilations)}")
        if pool_kernel_size is not None:
            if len(pool_kernel_size) != 2 or any(int(k) < 1 for k in pool_kernel_size):
                raise ValueError(
                    f"pool_kernel_size must be None or (kh, kw) with positive sizes, got {pool_kernel_size}"
                )
            pool_kernel_size = (int(pool_kernel_size[0]), int(pool_kernel_size[1]))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pool_kernel_size = pool_kernel_size
        self.dropout = dropout
        use_bias = norm is None or norm == ""

        self.convs = nn.ModuleList()
        self.convs.append(
            Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
                activation=copy.deepcopy(activation),
            )
        )
        c2_xavier_fill(self.convs[-1])
        for dilation in dilations:
            if use_depthwise_separable_conv:
                self.convs.append(
                    DepthwiseSeparableConv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=dilation,
                        dilation=dilation,
                        norm1=norm,
                        activation1=copy.deepcopy(activation),
                        norm2=norm,
                        activation2=copy.deepcopy(activation),
                    )
                )
            else:
                self.convs.append(
                    Conv2d(
                        in_channels,
                        out_channels,
                        kernel_size=3,
                        padding=dilation,
                        dilation=dilation,
                        bias=use_bias,
                        norm=get_norm(norm, out_channels),
                        activation=copy.deepcopy(activation),
                    )
                )
                c2_xavier_fill(self.convs[-1])
        # Image pooling: no norm, the pooled map is 1x1 (the TF original has one).
        pool: nn.Module
        if pool_kernel_size is None:
            pool = nn.AdaptiveAvgPool2d(1)
        else:
            pool = nn.AvgPool2d(kernel_size=pool_kernel_size, stride=1)
        image_pooling = nn.Sequential(
            pool, Conv2d(in_channels, out_channels, 1, bias=True, activation=copy.deepcopy(activation))
        )
        c2_xavier_fill(image_pooling[1])
        self.convs.append(image_pooling)

        self.project = Conv2d(
            5 * out_channels,
            out_channels,
            kernel_size=1,
            bias=use_bias,
            norm=get_norm(norm, out_channels),
            activation=copy.deepcopy(activation),
        )
        c2_xavier_fill(self.project)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        if self.pool_kernel_size is not None and (
            size[0] % self.pool_kernel_size[0] or size[1] % self.pool_kernel_size[1]
        ):
            raise ValueError(
                f"x height and width must be multiples of pool_kernel_size {self.pool_kernel_size}, "
                f"got input of shape {list(x.shape)}"
            )
        res = [conv(x) for conv in self.convs]
        res[-1] = F.interpolate(res[-1], size=size, mode="bilinear", align_corners=False)
        out = self.project(torch.cat(res, dim=1))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, training=self.training)
        return out
