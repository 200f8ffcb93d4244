"""Folding FrozenBatchNorm2d into convs keeps the features (R-50-FPN with random weights and statistics)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcore.backbones import (
    ResNetConfig,
    ResNetFPNConfig,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    fuse_frozen_batchnorm,
)
from detcore.ops import Conv2d, FrozenBatchNorm2d


def _randomize(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.normal_(0, 0.1, generator=g)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fuse_r50_fpn_keeps_features(channels_last):
    torch.manual_seed(0)
    model = build_resnet_fpn_backbone(ResNetFPNConfig.base_rcnn_fpn()).eval()
    _randomize(model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse_for_inference(channels_last=channels_last)
        assert fused is model
        got = model(x)
    remaining = [
        name
        for name, m in model.named_modules()
        if isinstance(m, Conv2d) and isinstance(m.norm, FrozenBatchNorm2d)
    ]
    assert remaining == []
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    if channels_last:
        assert model.bottom_up.res2[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    for k in ref:
        scale = ref[k].abs().max()
        torch.testing.assert_close(got[k], ref[k], atol=1e-4 * scale.item(), rtol=1e-4, msg=k)


def test_fuse_folds_existing_bias_and_skips_other_norms():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(4))
    bn_conv = Conv2d(4, 4, 1, bias=False, norm=nn.BatchNorm2d(4))
    model = nn.Sequential(conv, nn.ReLU(), bn_conv).eval()
    _randomize(model, 1)
    with torch.no_grad():
        bn_conv.norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x).double()
        # float64 reference of the first conv + FrozenBN
        n = conv.norm
        y = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), 1, 1)
        scale = n.weight.double() / torch.sqrt(n.running_var.double() + n.eps)
        y = (y - n.running_mean.double()[:, None, None]) * scale[:, None, None] + n.bias.double()[
            :, None, None
        ]
        fuse_frozen_batchnorm(model)
        got = model(x).double()
        torch.testing.assert_close(model[0](x).double(), y, atol=1e-5, rtol=1e-5)
    assert isinstance(model[0].norm, nn.Identity) and isinstance(model[2].norm, nn.BatchNorm2d)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="module"):
        fuse_frozen_batchnorm("not a module")


def test_fuse_leaves_deformable_conv_norms():
    torch.manual_seed(0)
    cfg = ResNetConfig(
        stem_out_channels=8,
        res2_out_channels=16,
        width_per_group=4,
        out_features=["res3"],
        deform_on_per_stage=[False, True, False, False],
        deform_modulated=True,
        freeze_at=0,
    )
    model = build_resnet_backbone(cfg).eval()
    _randomize(model, 2)
    nn.init.normal_(model.res3[0].conv2_offset.weight, std=0.05)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)["res3"]
        fuse_frozen_batchnorm(model, channels_last=True)
        got = model(x)["res3"]
    assert isinstance(model.res3[0].conv2.norm, FrozenBatchNorm2d)
    assert isinstance(model.res3[0].conv1.norm, nn.Identity)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
