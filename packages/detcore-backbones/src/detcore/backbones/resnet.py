"""ResNet / ResNeXt backbones (with optional deformable convs), with detectron2's structure and names."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.backbones.backbone import Backbone
from detcore.ops import CNNBlockBase, Conv2d, ShapeSpec, c2_msra_fill, get_norm

__all__ = [
    "BasicBlock",
    "BasicStem",
    "BottleneckBlock",
    "DeformBottleneckBlock",
    "ResNet",
    "ResNetConfig",
    "build_resnet_backbone",
    "make_stage",
]

NormSpec = Any  # str ("BN", "SyncBN", "FrozenBN", "GN", "") or a callable channels -> nn.Module

_NUM_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _check_depth(depth: int) -> list[int]:
    if depth not in _NUM_BLOCKS_PER_STAGE:
        raise ValueError(f"depth must be one of {sorted(_NUM_BLOCKS_PER_STAGE)}, got {depth!r}")
    return _NUM_BLOCKS_PER_STAGE[depth]


class BasicBlock(CNNBlockBase):
    """The basic residual block of ResNet-18/34: two 3x3 convs, a projection shortcut when shapes differ.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first 3x3 conv (and of the shortcut).
        norm: normalization for every conv (see :func:`detcore.ops.get_norm`).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: NormSpec = "BN"):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, C_in, H, W]) -> Tensor[N, C_out, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """The bottleneck residual block of ResNet-50/101/152 and ResNeXt: 1x1, 3x3 (grouped), 1x1 convs.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bottleneck_channels: channels of the 3x3 conv.
        stride: stride of the block (in the first 1x1 conv when ``stride_in_1x1``, else in the 3x3 conv).
        num_groups: groups of the 3x3 conv (ResNeXt cardinality).
        norm: normalization for every conv (see :func:`detcore.ops.get_norm`).
        stride_in_1x1: True for MSRA/Caffe2 ResNets (detectron2's default), False for torchvision's.
        dilation: dilation of the 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: NormSpec = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=1 * dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, C_in, H, W]) -> Tensor[N, C_out, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class DeformBottleneckBlock(CNNBlockBase):
    """A bottleneck block whose 3x3 conv is a deformable conv (v1) or a modulated deformable conv (v2).

    A plain conv ``conv2_offset`` predicts the offsets (18 channels per deformable group; 27 with the
    modulation mask); it is zero-initialised, so the block starts as a regular bottleneck block.

    Args:
        in_channels, out_channels, bottleneck_channels, stride, num_groups, norm, stride_in_1x1, dilation:
            as :class:`BottleneckBlock`.
        deform_modulated: use :class:`detcore.ops.ModulatedDeformConv` (DCNv2) instead of DeformConv.
        deform_num_groups: number of deformable groups (offset groups).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: NormSpec = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        # imported here so that detcore.backbones works without the deformable-conv ops
        from detcore.ops import DeformConv, ModulatedDeformConv

        if deform_modulated:
            deform_conv_op: type[nn.Module] = ModulatedDeformConv
            offset_channels = 27  # x, y offsets and a mask value for each of the 3x3 taps
        else:
            deform_conv_op = DeformConv
            offset_channels = 18
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offset_channels * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=1 * dilation,
            dilation=dilation,
        )
        self.conv2 = deform_conv_op(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=1 * dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, C_in, H, W]) -> Tensor[N, C_out, H / stride, W / stride]."""
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            offset_mask = self.conv2_offset(out)
            offset_x, offset_y, mask = torch.chunk(offset_mask, 3, dim=1)
            offset = torch.cat((offset_x, offset_y), dim=1)
            out = self.conv2(out, offset, mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu_(out)
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class BasicStem(CNNBlockBase):
    """The standard ResNet stem: 7x7 conv (stride 2) + norm + ReLU + 3x3 max pool (stride 2); stride 4.

    Args:
        in_channels: input channels (3 for images).
        out_channels: output channels.
        norm: normalization of the conv (see :func:`detcore.ops.get_norm`).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: NormSpec = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, C_in, H, W]) -> Tensor[N, C_out, ceil(H / 4), ceil(W / 4)]."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def make_stage(
    block_class: type[CNNBlockBase], num_blocks: int, *, in_channels: int, out_channels: int, **kwargs: Any
) -> list[CNNBlockBase]:
    """Create the list of blocks of one ResNet stage (see :meth:`ResNet.make_stage`)."""
    return ResNet.make_stage(
        block_class, num_blocks, in_channels=in_channels, out_channels=out_channels, **kwargs
    )


_STAGE_NAME = re.compile(r"^res(\d+)$")


class ResNet(Backbone):
    """Deep Residual Learning for Image Recognition (and ResNeXt).

    Args:
        stem: the stem module (a CNNBlockBase with ``out_channels`` and ``stride``).
        stages: several (typically 4) stages, each a non-empty list of CNNBlockBase; named res2, res3, ...
        num_classes: if given, add global average pooling and a linear classifier named ``linear``.
        out_features: names of the outputs to return, among "stem", "res2", ..., and "linear". Stages after
            the last requested one are not built. Default: the last layer.
        freeze_at: number of stages to freeze (see :meth:`freeze`).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[CNNBlockBase]],
        num_classes: int | None = None,
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
    ):
        super().__init__()
        self.stem = stem
        self.num_classes = num_classes

        valid = ["stem"] + [f"res{i + 2}" for i in range(len(stages))]
        if num_classes is not None:
            valid.append("linear")
        if out_features is not None:
            out_features = list(out_features)
            if not out_features:
                raise ValueError(f"out_features must name at least one of {valid}, got []")
            for name in out_features:
                if name not in valid:
                    raise ValueError(
                        f"out_features names {name!r}, which this ResNet does not have; valid names: {valid}"
                    )
            if "linear" not in out_features:
                num_stages = max(
                    (int(m.group(1)) - 1 for m in map(_STAGE_NAME.match, out_features) if m), default=0
                )
                stages = stages[:num_stages]

        current_stride = int(self.stem.stride)
        curr_channels = int(self.stem.out_channels)
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": curr_channels}

        stage_names: list[str] = []
        self.stages: list[nn.Sequential] = []
        for i, blocks in enumerate(stages):
            if len(blocks) == 0:
                raise ValueError(f"stages[{i}] is empty; every stage needs at least one block")
            for block in blocks:
                if not isinstance(block, CNNBlockBase):
                    raise TypeError(f"stages[{i}] must hold CNNBlockBase modules, got {type(block).__name__}")
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            stage_names.append(name)
            self.stages.append(stage)
            current_stride = int(current_stride * math.prod(int(k.stride) for k in blocks))
            curr_channels = int(blocks[-1].out_channels)
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = curr_channels
        self.stage_names = tuple(stage_names)
        last = stage_names[-1] if stage_names else "stem"

        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(curr_channels, num_classes)
            # "The 1000-way fully-connected layer is initialized by drawing weights from a zero-mean
            # Gaussian with standard deviation of 0.01." (Sec 5.1 of "Accurate, Large Minibatch SGD")
            nn.init.normal_(self.linear.weight, std=0.01)
            last = "linear"

        self._out_features = list(out_features) if out_features is not None else [last]
        self.freeze(freeze_at)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Compute the requested features.

        Args:
            x (Tensor[N, C, H, W]): image batch.

        Returns:
            dict[str, Tensor]: name -> feature (Tensor[N, C_k, H_k, W_k]; "linear": Tensor[N, num_classes]).
        """
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ResNet input x must be a Tensor[N, C, H, W], got {got}")
        outputs: dict[str, Tensor] = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = torch.flatten(self.avgpool(x), 1)
            x = self.linear(x)
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every convolutional output ("linear" has no spatial shape; left out)."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
            if name != "linear"
        }

    def freeze(self, freeze_at: int = 0) -> ResNet:
        """Freeze the first ``freeze_at`` stages (fine-tuning).

        1 freezes the stem, 2 the stem and res2, etc. Frozen blocks get ``requires_grad=False`` on every
        parameter and their BatchNorm layers become FrozenBatchNorm2d.

        Args:
            freeze_at: number of stages to freeze, >= 0.

        Returns:
            ResNet: this module.
        """
        if not isinstance(freeze_at, int) or freeze_at < 0:
            raise ValueError(f"freeze_at must be an int >= 0, got {freeze_at!r}")
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(
        block_class: type[CNNBlockBase],
        num_blocks: int,
        *,
        in_channels: int,
        out_channels: int,
        **kwargs: Any,
    ) -> list[CNNBlockBase]:
        """Create the list of blocks of one stage.

        Args:
            block_class: a CNNBlockBase subclass; it must not change the spatial size unless stride != 1.
            num_blocks: number of blocks.
            in_channels: input channels of the stage (of its first block).
            out_channels: output channels of every block.
            **kwargs: passed to every block. An argument ``xx_per_block`` is a list of ``num_blocks`` values,
                the i-th given to block i as ``xx`` (e.g. ``stride_per_block=[2, 1, 1]``).

        Returns:
            list[CNNBlockBase]: the blocks.
        """
        per_block: dict[str, Sequence[Any]] = {}
        shared: dict[str, Any] = {}
        for k, v in kwargs.items():
            if k.endswith("_per_block"):
                if len(v) != num_blocks:
                    raise ValueError(f"{k} must have num_blocks={num_blocks} values, got {len(v)}")
                newk = k[: -len("_per_block")]
                if newk in kwargs:
                    raise ValueError(f"both {k} and {newk} were given; pass only one")
                per_block[newk] = v
            else:
                shared[k] = v
        blocks = []
        for i in range(num_blocks):
            curr_kwargs = dict(shared)
            curr_kwargs.update({k: v[i] for k, v in per_block.items()})
            blocks.append(block_class(in_channels=in_channels, out_channels=out_channels, **curr_kwargs))
            in_channels = out_channels
        return blocks

    @staticmethod
    def make_default_stages(
        depth: int, block_class: type[CNNBlockBase] | None = None, **kwargs: Any
    ) -> list[list[CNNBlockBase]]:
        """The four stages of a standard ResNet of ``depth`` 18, 34, 50, 101 or 152 (64-channel stem).

        Args:
            depth: ResNet depth.
            block_class: the block type; default BasicBlock (depth < 50) or BottleneckBlock. For depth >= 50
                it must accept ``bottleneck_channels``.
            **kwargs: passed to :meth:`make_stage` (not strides nor channels, which the depth fixes).

        Returns:
            list[list[CNNBlockBase]]: the stages.
        """
        num_blocks_per_stage = _check_depth(depth)
        if block_class is None:
            block_class = BasicBlock if depth < 50 else BottleneckBlock
        if depth < 50:
            in_channels = [64, 64, 128, 256]
            out_channels = [64, 128, 256, 512]
        else:
            in_channels = [64, 256, 512, 1024]
            out_channels = [256, 512, 1024, 2048]
        ret = []
        for n, s, i, o in zip(num_blocks_per_stage, [1, 2, 2, 2], in_channels, out_channels):
            if depth >= 50:
                kwargs["bottleneck_channels"] = o // 4
            ret.append(
                ResNet.make_stage(
                    block_class=block_class,
                    num_blocks=n,
                    stride_per_block=[s] + [1] * (n - 1),
                    in_channels=i,
                    out_channels=o,
                    **kwargs,
                )
            )
        return ret


@dataclass
class ResNetConfig:
    """ResNet backbone settings; defaults equal detectron2's ``MODEL.RESNETS.*`` and ``MODEL.BACKBONE``.

    Attributes:
        depth: 18, 34, 50, 101 or 152 (MODEL.RESNETS.DEPTH).
        out_features: outputs among "stem", "res2".."res5" (MODEL.RESNETS.OUT_FEATURES; default the C4
            single-scale backbone ["res4"]).
        norm: "FrozenBN", "BN", "SyncBN", "GN" or "" (MODEL.RESNETS.NORM).
        num_groups: ResNeXt cardinality, 1 for ResNet (MODEL.RESNETS.NUM_GROUPS).
        width_per_group: bottleneck width per group in res2 (MODEL.RESNETS.WIDTH_PER_GROUP).
        stride_in_1x1: stride in the first 1x1 conv (MSRA/Caffe2) instead of the 3x3 (torchvision)
            (MODEL.RESNETS.STRIDE_IN_1X1).
        res5_dilation: 1, or 2 for DC5 (res5 keeps stride 16) (MODEL.RESNETS.RES5_DILATION).
        res2_out_channels: output channels of res2; later stages double it (MODEL.RESNETS.RES2_OUT_CHANNELS).
        stem_out_channels: MODEL.RESNETS.STEM_OUT_CHANNELS.
        deform_on_per_stage: deformable 3x3 convs in res2..res5 (MODEL.RESNETS.DEFORM_ON_PER_STAGE).
        deform_modulated: DCNv2 instead of DCNv1 (MODEL.RESNETS.DEFORM_MODULATED).
        deform_num_groups: deformable groups (MODEL.RESNETS.DEFORM_NUM_GROUPS).
        freeze_at: stages to freeze, 0 none, 1 stem, 2 stem+res2, ... (MODEL.BACKBONE.FREEZE_AT).
    """

    depth: int = 50
    out_features: list[str] = field(default_factory=lambda: ["res4"])
    norm: str = "FrozenBN"
    num_groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    res5_dilation: int = 1
    res2_out_channels: int = 256
    stem_out_channels: int = 64
    deform_on_per_stage: list[bool] = field(default_factory=lambda: [False, False, False, False])
    deform_modulated: bool = False
    deform_num_groups: int = 1
    freeze_at: int = 2


def build_resnet_backbone(cfg: ResNetConfig, input_shape: ShapeSpec | None = None) -> ResNet:
    """Create a ResNet from its config, as detectron2's ``build_resnet_backbone`` does.

    Registered as backbone "resnet" (with the default config: the single-scale C4 backbone).

    Args:
        cfg: the ResNet settings.
        input_shape: shape of the input; only ``channels`` is used (default 3).

    Returns:
        ResNet: the backbone (stages after the last of ``cfg.out_features`` are not built).
    """
    in_channels = 3 if input_shape is None or input_shape.channels is None else int(input_shape.channels)
    num_blocks_per_stage = _check_depth(cfg.depth)
    if cfg.res5_dilation not in (1, 2):
        raise ValueError(f"res5_dilation must be 1 or 2, got {cfg.res5_dilation!r}")
    if len(cfg.deform_on_per_stage) != 4:
        raise ValueError(
            f"deform_on_per_stage must have 4 values (res2..res5), got {list(cfg.deform_on_per_stage)}"
        )
    valid = ["stem", "res2", "res3", "res4", "res5"]
    out_features = list(cfg.out_features)
    if not out_features:
        raise ValueError(f"out_features must name at least one of {valid}, got []")
    for name in out_features:
        if name not in valid:
            raise ValueError(f"out_features names {name!r}, which ResNet does not have; valid names: {valid}")
    if cfg.depth in (18, 34):
        if cfg.res2_out_channels != 64:
            raise ValueError(
                f"res2_out_channels must be 64 for ResNet-{cfg.depth}, got {cfg.res2_out_channels}"
            )
        if any(cfg.deform_on_per_stage):
            raise ValueError(f"deform_on_per_stage must be all False for ResNet-{cfg.depth}")
        if cfg.res5_dilation != 1:
            raise ValueError(f"res5_dilation must be 1 for ResNet-{cfg.depth}, got {cfg.res5_dilation}")
        if cfg.num_groups != 1:
            raise ValueError(f"num_groups must be 1 for ResNet-{cfg.depth}, got {cfg.num_groups}")

    stem = BasicStem(in_channels=in_channels, out_channels=cfg.stem_out_channels, norm=cfg.norm)
    bottleneck_channels = cfg.num_groups * cfg.width_per_group
    in_channels = cfg.stem_out_channels
    out_channels = cfg.res2_out_channels
    max_stage_idx = max((int(f[3:]) for f in out_features if f != "stem"), default=1)
    stages = []
    for idx, stage_idx in enumerate(range(2, max_stage_idx + 1)):
        dilation = cfg.res5_dilation if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        n = num_blocks_per_stage[idx]
        stage_kwargs: dict[str, Any] = {
            "num_blocks": n,
            "stride_per_block": [first_stride] + [1] * (n - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": cfg.norm,
        }
        if cfg.depth in (18, 34):
            stage_kwargs["block_class"] = BasicBlock
        else:
            stage_kwargs["bottleneck_channels"] = bottleneck_channels
            stage_kwargs["stride_in_1x1"] = cfg.stride_in_1x1
            stage_kwargs["dilation"] = dilation
            stage_kwargs["num_groups"] = cfg.num_groups
            if cfg.deform_on_per_stage[idx]:
                stage_kwargs["block_class"] = DeformBottleneckBlock
                stage_kwargs["deform_modulated"] = cfg.deform_modulated
                stage_kwargs["deform_num_groups"] = cfg.deform_num_groups
            else:
                stage_kwargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=out_features, freeze_at=cfg.freeze_at)
