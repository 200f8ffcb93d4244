"""CNNBlockBase.freeze, DepthwiseSeparableConv2d and the Caffe2 initialisations."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from detcore.ops import (
    CNNBlockBase,
    Conv2d,
    DepthwiseSeparableConv2d,
    FrozenBatchNorm2d,
    c2_msra_fill,
    c2_xavier_fill,
    get_norm,
)


class _Block(CNNBlockBase):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm("BN", out_channels),
        )
        self.branch = nn.Sequential(nn.Conv2d(out_channels, out_channels, 1), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return F.relu(self.branch(F.relu(self.conv1(x))))


def test_cnn_block_attributes():
    b = _Block(3, 8, 2)
    assert (b.in_channels, b.out_channels, b.stride) == (3, 8, 2)
    assert b(torch.randn(1, 3, 8, 8)).shape == (1, 8, 4, 4)


def test_freeze_converts_batchnorm_and_stops_gradients():
    torch.manual_seed(0)
    block = _Block(3, 8, 1)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    block.eval()
    x = torch.randn(2, 3, 6, 6)
    expected = block(x)
    keys = [k for k in block.state_dict() if not k.endswith("num_batches_tracked")]

    assert block.freeze() is block
    assert type(block.conv1.norm) is FrozenBatchNorm2d
    assert type(block.branch[1]) is FrozenBatchNorm2d
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert all(not p.requires_grad for p in block.parameters())
    assert list(block.state_dict()) == keys
    block.train()  # frozen: training mode changes nothing
    torch.testing.assert_close(block(x), expected)


def test_depthwise_separable_conv():
    torch.manual_seed(0)
    m = DepthwiseSeparableConv2d(
        4, 6, kernel_size=3, padding=2, dilation=2, norm1="", norm2="BN", activation2=F.relu
    )
    assert m.depthwise.groups == 4 and m.depthwise.bias is not None and m.depthwise.norm is None
    assert m.pointwise.bias is None and isinstance(m.pointwise.norm, nn.BatchNorm2d)
    m.eval()
    x = torch.randn(2, 4, 7, 7)
    y = F.conv2d(x, m.depthwise.weight, m.depthwise.bias, padding=2, dilation=2, groups=4)
    y = F.relu(m.pointwise.norm(F.conv2d(y, m.pointwise.weight)))
    torch.testing.assert_close(m(x), y)


def test_c2_fills():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    nn.init.constant_(conv.bias, 1.0)
    c2_msra_fill(conv)
    assert torch.count_nonzero(conv.bias) == 0
    fan_out = 128 * 9
    assert abs(conv.weight.std().item() - math.sqrt(2.0 / fan_out)) < 0.05 * math.sqrt(2.0 / fan_out)

    c2_xavier_fill(conv)
    bound = math.sqrt(3.0 / (64 * 9))
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.abs().max().item() > 0.95 * bound
    assert torch.count_nonzero(conv.bias) == 0
    c2_xavier_fill(nn.Conv2d(2, 2, 1, bias=False))  # no bias: fine
