"""ResNet blocks and backbone: values against float64 pure-PyTorch references, structure, freezing, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from detcore.backbones import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    ResNetConfig,
    build_resnet_backbone,
    make_stage,
)
from detcore.ops import FrozenBatchNorm2d, ShapeSpec


def _randomize_norms(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean.data = torch.randn(c, generator=g) * 0.1
            m.running_var.data = torch.rand(c, generator=g) + 0.5


def _ref_conv_norm(x, conv, stride=1, padding=0, dilation=1, groups=1):
    """float64 reference of detcore Conv2d(bias=False) followed by its FrozenBN/eval BN norm."""
    y = F.conv2d(x, conv.weight.double(), None, stride, padding, dilation, groups)
    n = conv.norm
    scale = n.weight.double() / torch.sqrt(n.running_var.double() + n.eps)
    shift = n.bias.double() - n.running_mean.double() * scale
    return y * scale[None, :, None, None] + shift[None, :, None, None]


@pytest.mark.parametrize("stride_in_1x1", [True, False])
@pytest.mark.parametrize(("stride", "groups", "dilation"), [(1, 1, 1), (2, 1, 1), (2, 4, 1), (1, 2, 2)])
def test_bottleneck_block_matches_reference(stride_in_1x1, stride, groups, dilation):
    torch.manual_seed(0)
    block = BottleneckBlock(
        16,
        32,
        bottleneck_channels=8,
        stride=stride,
        num_groups=groups,
        norm="FrozenBN",
        stride_in_1x1=stride_in_1x1,
        dilation=dilation,
    )
    _randomize_norms(block)
    x = torch.randn(2, 16, 11, 13)
    got = block(x)
    xd = x.double()
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    out = F.relu(_ref_conv_norm(xd, block.conv1, stride=s1))
    out = F.relu(_ref_conv_norm(out, block.conv2, s3, dilation, dilation, groups))
    out = _ref_conv_norm(out, block.conv3)
    out = F.relu(out + _ref_conv_norm(xd, block.shortcut, stride=stride))
    assert got.shape == (2, 32, math.ceil(11 / stride), math.ceil(13 / stride))
    torch.testing.assert_close(got.double(), out, atol=1e-4, rtol=1e-4)


def test_bottleneck_identity_shortcut_and_names():
    block = BottleneckBlock(32, 32, bottleneck_channels=8, norm="FrozenBN")
    assert block.shortcut is None
    _randomize_norms(block)
    x = torch.randn(1, 32, 7, 7)
    xd = x.double()
    out = F.relu(_ref_conv_norm(xd, block.conv1))
    out = F.relu(_ref_conv_norm(out, block.conv2, 1, 1))
    out = F.relu(_ref_conv_norm(out, block.conv3) + xd)
    torch.testing.assert_close(block(x).double(), out, atol=1e-4, rtol=1e-4)
    keys = set(block.state_dict())
    assert "conv1.weight" in keys and "conv3.norm.running_var" in keys and "conv2.bias" not in keys


def test_basic_block_and_stem_match_reference():
    torch.manual_seed(1)
    block = BasicBlock(8, 16, stride=2, norm="FrozenBN")
    _randomize_norms(block)
    x = torch.randn(2, 8, 10, 9)
    xd = x.double()
    out = F.relu(_ref_conv_norm(xd, block.conv1, 2, 1))
    out = _ref_conv_norm(out, block.conv2, 1, 1)
    out = F.relu(out + _ref_conv_norm(xd, block.shortcut, 2))
    torch.testing.assert_close(block(x).double(), out, atol=1e-4, rtol=1e-4)

    stem = BasicStem(3, 8, norm="FrozenBN")
    _randomize_norms(stem)
    x = torch.randn(1, 3, 33, 40)
    ref = F.max_pool2d(F.relu(_ref_conv_norm(x.double(), stem.conv1, 2, 3)), 3, 2, 1)
    got = stem(x)
    assert got.shape == (1, 8, 9, 10)
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)
    assert set(stem.state_dict()) == {
        "conv1.weight",
        "conv1.norm.weight",
        "conv1.norm.bias",
        "conv1.norm.running_mean",
        "conv1.norm.running_var",
    }


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_bottleneck_block(modulated):
    torch.manual_seed(2)
    block = DeformBottleneckBlock(
        16, 32, bottleneck_channels=8, stride=2, norm="FrozenBN", deform_modulated=modulated
    )
    _randomize_norms(block)
    assert block.conv2_offset.weight.shape == (27 if modulated else 18, 8, 3, 3)
    assert (
        torch.count_nonzero(block.conv2_offset.weight) == 0
        and torch.count_nonzero(block.conv2_offset.bias) == 0
    )
    # non-zero offsets: compare with torchvision's deform_conv2d composed by hand
    nn.init.normal_(block.conv2_offset.weight, std=0.1)
    nn.init.normal_(block.conv2_offset.bias, std=0.5)
    x = torch.randn(2, 16, 12, 10)
    got = block(x)
    xd = x.double()
    out = F.relu(_ref_conv_norm(xd, block.conv1, stride=1))
    om = F.conv2d(out, block.conv2_offset.weight.double(), block.conv2_offset.bias.double(), 2, 1)
    mask = torch.sigmoid(om[:, 18:]) if modulated else None
    y = torchvision.ops.deform_conv2d(out, om[:, :18], block.conv2.weight.double(), None, 2, 1, 1, mask)
    n = block.conv2.norm
    scale = n.weight.double() / torch.sqrt(n.running_var.double() + n.eps)
    y = F.relu(
        y * scale[None, :, None, None]
        + (n.bias.double() - n.running_mean.double() * scale)[None, :, None, None]
    )
    y = _ref_conv_norm(y, block.conv3)
    ref = F.relu(y + _ref_conv_norm(xd, block.shortcut, stride=2))
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_make_stage_per_block_arguments():
    blocks = make_stage(
        BottleneckBlock,
        3,
        in_channels=16,
        out_channels=64,
        bottleneck_channels=16,
        num_groups=1,
        stride_per_block=[2, 1, 1],
        dilation_per_block=[1, 1, 2],
    )
    assert [b.stride for b in blocks] == [2, 1, 1]
    assert [b.in_channels for b in blocks] == [16, 64, 64]
    assert [b.conv2.dilation for b in blocks] == [(1, 1), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match="stride_per_block"):
        ResNet.make_stage(
            BottleneckBlock, 3, in_channels=8, out_channels=8, bottleneck_channels=4, stride_per_block=[1]
        )


@pytest.mark.parametrize(
    ("depth", "blocks"),
    [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3]), (50, [3, 4, 6, 3]), (101, [3, 4, 23, 3]), (152, [3, 8, 36, 3])],
)
def test_make_default_stages(depth, blocks):
    with torch.device("meta"):
        stages = ResNet.make_default_stages(depth, norm="FrozenBN")
        model = ResNet(BasicStem(norm="FrozenBN"), stages, out_features=["res2", "res3", "res4", "res5"])
    assert [len(s) for s in stages] == blocks
    expected_kind = BasicBlock if depth < 50 else BottleneckBlock
    assert all(isinstance(b, expected_kind) for s in stages for b in s)
    width = 1 if depth < 50 else 4
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (64 * width, 4),
        "res3": (128 * width, 8),
        "res4": (256 * width, 16),
        "res5": (512 * width, 32),
    }


def test_unknown_depth_raises():
    with pytest.raises(ValueError, match=r"depth.*\[18, 34, 50, 101, 152\].*77"):
        ResNet.make_default_stages(77)
    with pytest.raises(ValueError, match="77"):
        build_resnet_backbone(ResNetConfig(depth=77))


def test_out_features_naming_missing_stage_raises():
    with pytest.raises(ValueError, match=r"'res6'.*valid names.*'res5'"):
        build_resnet_backbone(ResNetConfig(out_features=["res2", "res6"]))
    stages = ResNet.make_default_stages(18)
    with pytest.raises(ValueError, match=r"'linear'.*valid names"):
        ResNet(BasicStem(), stages, out_features=["linear"])
    with pytest.raises(ValueError, match="res5_dilation"):
        build_resnet_backbone(ResNetConfig(res5_dilation=4))


def _small_cfg(**kw) -> ResNetConfig:
    base = dict(stem_out_channels=8, res2_out_channels=16, width_per_group=4, freeze_at=0)
    base.update(kw)
    return ResNetConfig(**base)


def test_resnet_forward_shapes_and_dc5():
    torch.manual_seed(0)
    model = build_resnet_backbone(
        _small_cfg(out_features=["stem", "res2", "res3", "res4", "res5"]), ShapeSpec(channels=3)
    )
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stem": (1, 8, 16, 24),
        "res2": (1, 16, 16, 24),
        "res3": (1, 32, 8, 12),
        "res4": (1, 64, 4, 6),
        "res5": (1, 128, 2, 3),
    }
    assert model.size_divisibility == 0 and model.padding_constraints == {}
    dc5 = build_resnet_backbone(_small_cfg(out_features=["res5"], res5_dilation=2))
    assert dc5.output_shape()["res5"].stride == 16
    assert dc5.res5[0].conv2.dilation == (2, 2) and dc5.res5[0].stride == 1
    assert tuple(dc5(x)["res5"].shape) == (1, 128, 4, 6)
    c4 = build_resnet_backbone(_small_cfg())
    assert c4.stage_names == ("res2", "res3", "res4") and not hasattr(c4, "res5")
    assert {k: (v.channels, v.stride) for k, v in c4.output_shape().items()} == {"res4": (64, 16)}
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        model(torch.randn(3, 64, 64))


def test_resnet_classification_head():
    torch.manual_seed(0)
    model = ResNet(
        BasicStem(3, 64, norm="FrozenBN"),
        ResNet.make_default_stages(18, norm="FrozenBN"),
        num_classes=10,
        out_features=["res5", "linear"],
    )
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    ref = F.linear(
        out["res5"].double().mean(dim=(2, 3)), model.linear.weight.double(), model.linear.bias.double()
    )
    torch.testing.assert_close(out["linear"].double(), ref, atol=1e-5, rtol=1e-5)
    assert set(model.output_shape()) == {"res5"}


def test_resnext_and_norms():
    with torch.device("meta"):
        x101 = build_resnet_backbone(
            ResNetConfig(depth=101, num_groups=32, width_per_group=8, out_features=["res5"])
        )
    assert x101.res2[0].conv2.groups == 32 and tuple(x101.res2[0].conv2.weight.shape) == (256, 8, 3, 3)
    assert tuple(x101.res5[0].conv2.weight.shape) == (2048, 64, 3, 3)
    for norm, cls in (
        ("BN", nn.BatchNorm2d),
        ("GN", nn.GroupNorm),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
    ):
        m = build_resnet_backbone(ResNetConfig(depth=50, norm=norm, freeze_at=0, out_features=["res2"]))
        assert isinstance(m.res2[0].conv1.norm, cls)
    with pytest.raises(ValueError, match="res2_out_channels"):
        build_resnet_backbone(ResNetConfig(depth=18))


def test_weight_init_is_msra():
    torch.manual_seed(0)
    block = BottleneckBlock(256, 1024, bottleneck_channels=256, norm="BN")
    w = block.conv3.weight  # fan_out = 1024
    assert abs(w.std().item() - math.sqrt(2.0 / 1024)) < 0.05 * math.sqrt(2.0 / 1024)
    assert abs(w.mean().item()) < 1e-3


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3])
def test_freeze(freeze_at):
    torch.manual_seed(0)
    model = build_resnet_backbone(_small_cfg(norm="BN", freeze_at=freeze_at, out_features=["res4"]))
    parts = {"stem": model.stem, "res2": model.res2, "res3": model.res3, "res4": model.res4}
    for i, (name, part) in enumerate(parts.items(), start=1):
        frozen = freeze_at >= i
        assert all(p.requires_grad != frozen for p in part.parameters()), name
        norms = [m for m in part.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) == frozen for m in norms), name
    model.train()
    model(torch.randn(2, 3, 32, 32))["res4"].sum().backward()
    for i, part in enumerate(parts.values(), start=1):
        for p in part.parameters():
            assert (p.grad is None) == (freeze_at >= i)
            if p.grad is not None:
                assert torch.isfinite(p.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.res4.parameters())
    with pytest.raises(ValueError, match="freeze_at"):
        model.freeze(-1)
