"""Feature Pyramid Network on top of a bottom-up backbone, with detectron2's structure and names."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from detcore.backbones.backbone import Backbone
from detcore.backbones.resnet import ResNetConfig, build_resnet_backbone
from detcore.ops import Conv2d, ShapeSpec, c2_xavier_fill, get_norm

__all__ = [
    "FPN",
    "FPNConfig",
    "LastLevelMaxPool",
    "LastLevelP6P7",
    "ResNetFPNConfig",
    "build_fcos_resnet_fpn_backbone",
    "build_resnet_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone",
]


class LastLevelMaxPool(nn.Module):
    """Adds P6 = max_pool2d(P5, kernel_size=1, stride=2) on top of the FPN."""

    def __init__(self) -> None:
        super().__init__()
        self.num_levels = 1
        self.in_feature = "p5"

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[N, C, H, W]) -> [Tensor[N, C, ceil(H / 2), ceil(W / 2)]]."""
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet's extra levels: P6 = conv3x3/2(C5 or P5), P7 = conv3x3/2(relu(P6)).

    Args:
        in_channels: channels of the input feature (res5's channels for "res5", the FPN width for "p5").
        out_channels: FPN width.
        in_feature: the feature P6 is computed from, "res5" (detectron2's RetinaNet) or "p5".
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "res5"):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            c2_xavier_fill(module)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[N, C_in, H, W]) -> [P6 (Tensor[N, C, H/2, W/2]), P7 (Tensor[N, C, H/4, W/4])]."""
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]


def _check_strides_log2_contiguous(strides: Sequence[int], in_features: Sequence[str]) -> None:
    for i, stride in enumerate(strides):
        if stride < 1 or 2 ** int(math.log2(stride)) != stride:
            raise ValueError(f"FPN input {in_features[i]!r} has stride {stride}, which is not a power of 2")
        if i > 0 and stride != 2 * strides[i - 1]:
            raise ValueError(
                f"FPN in_features must have log2-contiguous strides (each twice the previous), got "
                f"{dict(zip(in_features, strides))}"
            )


class FPN(Backbone):
    """Feature Pyramid Networks for Object Detection: pyramid features over a bottom-up backbone.

    Args:
        bottom_up: the bottom-up network (a Backbone) whose features ``in_features`` feed the FPN.
        in_features: names of the bottom-up features, high to low resolution, with log2-contiguous strides
            (e.g. ["res2", "res3", "res4", "res5"]).
        out_channels: channels of every output.
        norm: normalization of the lateral and output convs ("" for none; then the convs have a bias).
        top_block: optional module adding ``top_block.num_levels`` coarser levels from the feature named
            ``top_block.in_feature`` (a bottom-up feature or an FPN output such as "p5").
        fuse_type: "sum" (lateral + top-down) or "avg" (their mean).
        square_pad: if > 0, the input batch must be padded to this square size (``padding_constraints``).

    Outputs are named ``p<stage>`` with stride ``2**stage``; convs are named ``fpn_lateral<stage>`` and
    ``fpn_output<stage>``, as in detectron2 checkpoints.
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        norm: Any = "",
        top_block: nn.Module | None = None,
        fuse_type: str = "sum",
        square_pad: int = 0,
    ):
        super().__init__()
        if not isinstance(bottom_up, Backbone):
            raise TypeError(f"bottom_up must be a Backbone, got {type(bottom_up).__name__}")
        in_features = list(in_features)
        if not in_features:
            raise ValueError(
                "in_features must name at least one bottom-up feature, e.g. ['res2', ..., 'res5']"
            )
        if fuse_type not in ("avg", "sum"):
            raise ValueError(f"fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        input_shapes = bottom_up.output_shape()
        for f in in_features:
            if f not in input_shapes:
                raise ValueError(
                    f"in_features names {f!r}, which the bottom-up network does not output; it "
                    f"outputs {list(input_shapes)}"
                )
        strides = [int(input_shapes[f].stride) for f in in_features]
        in_channels_per_feature = [int(input_shapes[f].channels) for f in in_features]
        _check_strides_log2_contiguous(strides, in_features)

        lateral_convs = []
        output_convs = []
        use_bias = norm == ""
        stage = 0
        for idx, in_channels in enumerate(in_channels_per_feature):
            lateral_conv = Conv2d(
                in_channels, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(norm, out_channels)
            )
            output_conv = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            c2_xavier_fill(lateral_conv)
            c2_xavier_fill(output_conv)
            stage = int(math.log2(strides[idx]))
            self.add_module(f"fpn_lateral{stage}", lateral_conv)
            self.add_module(f"fpn_output{stage}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # top-down order (low to high resolution); plain lists so that state-dict names stay fpn_*<stage>
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if self.top_block is not None:
            for s in range(stage, stage + self.top_block.num_levels):
                self._out_feature_strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._out_feature_strides)
        if self.top_block is not None:
            src = getattr(self.top_block, "in_feature", None)
            available = [f for f in input_shapes if f in in_features] + self._out_features
            if src not in input_shapes and src not in self._out_features:
                raise ValueError(
                    f"top_block.in_feature is {src!r}, which is neither a bottom-up feature nor an FPN output; "
                    f"expected one of {available}"
                )
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = int(square_pad)
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        """The largest input stride: input height and width must be multiples of it."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        """``{"square_size": square_pad}`` when ``square_pad`` > 0, else {}."""
        return {"square_size": self._square_pad} if self._square_pad > 0 else {}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Compute the pyramid.

        Args:
            x (Tensor[N, C, H, W]): image batch; H and W must be multiples of ``size_divisibility``.

        Returns:
            dict[str, Tensor]: "p2".."p6" (or the configured levels), high to low resolution, each
            Tensor[N, out_channels, H / stride, W / stride].
        """
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"FPN input x must be a Tensor[N, C, H, W], got {got}")
        d = self._size_divisibility
        h, w = x.shape[-2], x.shape[-1]
        if h % d != 0 or w % d != 0:
            raise ValueError(
                f"FPN input size (H, W) = ({h}, {w}) must be a multiple of size_divisibility {d} for the "
                f"top-down path; pad the batch (e.g. ImageList.from_tensors(..., size_divisibility={d}))"
            )
        bottom_up_features = self.bottom_up(x)
        results = []
        prev_features = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results.append(self.output_convs[0](prev_features))
        for idx, (lateral_conv, output_conv) in enumerate(zip(self.lateral_convs, self.output_convs)):
            if idx > 0:
                features = bottom_up_features[self.in_features[-idx - 1]]
                top_down_features = F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
                prev_features = lateral_conv(features)
                prev_features += top_down_features
                if self._fuse_type == "avg":
                    prev_features /= 2
                results.insert(0, output_conv(prev_features))
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_block_in_feature = bottom_up_features[self.top_block.in_feature]
            else:
                top_block_in_feature = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_block_in_feature))
        return dict(zip(self._out_features, results))


@dataclass
class FPNConfig:
    """FPN settings; defaults equal detectron2's ``MODEL.FPN.*``.

    Attributes:
        in_features: bottom-up features feeding the FPN (MODEL.FPN.IN_FEATURES; detectron2's default is
            empty, so a config must set it, e.g. ["res2", "res3", "res4", "res5"]).
        out_channels: MODEL.FPN.OUT_CHANNELS.
        norm: MODEL.FPN.NORM ("" for none).
        fuse_type: "sum" or "avg" (MODEL.FPN.FUSE_TYPE).
    """

    in_features: list[str] = field(default_factory=list)
    out_channels: int = 256
    norm: str = ""
    fuse_type: str = "sum"


@dataclass
class ResNetFPNConfig:
    """Settings of a ResNet+FPN backbone: the ResNet (``MODEL.RESNETS.*``) and the FPN (``MODEL.FPN.*``).

    The defaults are detectron2's defaults; :meth:`base_rcnn_fpn` and :meth:`base_retinanet` give the values
    of detectron2's Base-RCNN-FPN.yaml and Base-RetinaNet.yaml.
    """

    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)

    @classmethod
    def base_rcnn_fpn(cls, depth: int = 50) -> ResNetFPNConfig:
        """detectron2's Base-RCNN-FPN: res2..res5 into the FPN, outputs p2..p6."""
        return cls(
            resnet=ResNetConfig(depth=depth, out_features=["res2", "res3", "res4", "res5"]),
            fpn=FPNConfig(in_features=["res2", "res3", "res4", "res5"]),
        )

    @classmethod
    def base_retinanet(cls, depth: int = 50) -> ResNetFPNConfig:
        """detectron2's Base-RetinaNet: res3..res5 into the FPN, P6/P7 from res5, outputs p3..p7."""
        return cls(
            resnet=ResNetConfig(depth=depth, out_features=["res3", "res4", "res5"]),
            fpn=FPNConfig(in_features=["res3", "res4", "res5"]),
        )


def _check_fpn_cfg(cfg: ResNetFPNConfig) -> None:
    if not cfg.fpn.in_features:
        raise ValueError(
            "fpn.in_features is empty (detectron2's default); set it to the bottom-up features to use, e.g. "
            "['res2', 'res3', 'res4', 'res5'] (see ResNetFPNConfig.base_rcnn_fpn())"
        )


def _resnet_fpn(
    cfg: ResNetFPNConfig, input_shape: ShapeSpec | None, top_block: Callable[[Backbone], nn.Module]
) -> FPN:
    """A ResNet bottom-up + FPN from ``cfg``; ``top_block(bottom_up)`` makes the extra levels' block."""
    _check_fpn_cfg(cfg)
    bottom_up = build_resnet_backbone(cfg.resnet, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.fpn.in_features,
        out_channels=cfg.fpn.out_channels,
        norm=cfg.fpn.norm,
        top_block=top_block(bottom_up),
        fuse_type=cfg.fpn.fuse_type,
    )


def build_resnet_fpn_backbone(cfg: ResNetFPNConfig, input_shape: ShapeSpec | None = None) -> FPN:
    """ResNet + FPN with a P6 max-pool level, as detectron2's ``build_resnet_fpn_backbone``.

    Registered as backbone "resnet_fpn".

    Args:
        cfg: ResNet and FPN settings.
        input_shape: shape of the input; only ``channels`` is used (default 3).

    Returns:
        FPN: the backbone, outputs p2..p6 for in_features res2..res5.
    """
    return _resnet_fpn(cfg, input_shape, lambda bottom_up: LastLevelMaxPool())


def build_retinanet_resnet_fpn_backbone(cfg: ResNetFPNConfig, input_shape: ShapeSpec | None = None) -> FPN:
    """ResNet + FPN with P6/P7 computed from res5, as detectron2's ``build_retinanet_resnet_fpn_backbone``.

    Registered as backbone "retinanet_resnet_fpn". ``cfg.resnet.out_features`` must include "res5".

    Args:
        cfg: ResNet and FPN settings.
        input_shape: shape of the input; only ``channels`` is used (default 3).

    Returns:
        FPN: the backbone, outputs p3..p7 for in_features res3..res5.
    """

    def p6p7_from_res5(bottom_up: Backbone) -> LastLevelP6P7:
        shapes = bottom_up.output_shape()
        if "res5" not in shapes:
            raise ValueError(
                f"resnet.out_features must include 'res5' (P6/P7 are computed from it), got {list(shapes)}"
            )
        return LastLevelP6P7(int(shapes["res5"].channels), cfg.fpn.out_channels, in_feature="res5")

    return _resnet_fpn(cfg, input_shape, p6p7_from_res5)


def build_fcos_resnet_fpn_backbone(cfg: ResNetFPNConfig, input_shape: ShapeSpec | None = None) -> FPN:
    """ResNet + FPN with P6/P7 computed from P5, as detectron2's FCOS (``configs/common/models/fcos.py``:
    RetinaNet's backbone with ``top_block.in_feature = "p5"``, ``top_block.in_channels = 256``, after Sec. 2.2
    of the FCOS paper).

    Registered as backbone "fcos_resnet_fpn". ``top_block.p6`` maps FPN width to FPN width
    (``Conv2d(out_channels, out_channels, 3, 2, 1)``); the state-dict names are those of
    :func:`build_retinanet_resnet_fpn_backbone`.

    Args:
        cfg: ResNet and FPN settings.
        input_shape: shape of the input; only ``channels`` is used (default 3).

    Returns:
        FPN: the backbone, outputs p3..p7 for in_features res3..res5.
    """
    width = cfg.fpn.out_channels
    return _resnet_fpn(cfg, input_shape, lambda bottom_up: LastLevelP6P7(width, width, in_feature="p5"))
