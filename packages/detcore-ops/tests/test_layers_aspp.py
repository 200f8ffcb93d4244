"""ASPP: structure, state-dict names, output shapes and a manual computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detcore.ops import ASPP, Conv2d, DepthwiseSeparableConv2d


def _relu():
    return nn.ReLU()


@pytest.mark.parametrize("norm", ["", "BN", "GN"])
@pytest.mark.parametrize("pool_kernel_size", [None, (4, 6)])
def test_aspp_output_shape(norm, pool_kernel_size):
    torch.manual_seed(0)
    aspp = ASPP(
        16, 32, [1, 2, 3], norm=norm, activation=F.relu, pool_kernel_size=pool_kernel_size, dropout=0.1
    )
    for size in [(8, 12), (4, 6)]:
        out = aspp(torch.randn(2, 16, *size))
        assert out.shape == (2, 32, *size)


def test_aspp_structure_and_state_dict_names():
    aspp = ASPP(8, 4, [6, 12, 18], norm="BN", activation=_relu())
    assert len(aspp.convs) == 5
    assert [c.dilation for c in aspp.convs[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert [c.padding for c in aspp.convs[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert all(c.bias is None for c in aspp.convs[:4]) and aspp.project.bias is None
    assert aspp.convs[4][1].bias is not None and aspp.convs[4][1].norm is None
    assert isinstance(aspp.convs[4][0], nn.AdaptiveAvgPool2d)
    assert aspp.project.in_channels == 20
    # every conv has its own activation module (deep copies)
    acts = [aspp.convs[i].activation for i in range(4)] + [
        aspp.convs[4][1].activation,
        aspp.project.activation,
    ]
    assert len({id(a) for a in acts}) == 6
    keys = set(aspp.state_dict())
    for k in [
        "convs.0.weight",
        "convs.0.norm.running_var",
        "convs.3.norm.weight",
        "convs.4.1.weight",
        "convs.4.1.bias",
        "project.weight",
        "project.norm.bias",
    ]:
        assert k in keys
    no_norm = ASPP(8, 4, [1, 2, 3], norm="", activation=None)
    assert all(c.bias is not None for c in no_norm.convs[:4]) and no_norm.project.bias is not None


def test_aspp_matches_manual_computation():
    torch.manual_seed(0)
    aspp = ASPP(6, 5, [1, 2, 3], norm="BN", activation=F.relu).eval()
    for m in aspp.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            with torch.no_grad():
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 7, 9)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    # atrous branch with dilation 3, by hand
    c = aspp.convs[3]
    branch3 = F.relu(bn(F.conv2d(x, c.weight, None, padding=3, dilation=3), c.norm))
    torch.testing.assert_close(c(x), branch3)
    # all branches
    branches = [F.relu(bn(F.conv2d(x, aspp.convs[0].weight), aspp.convs[0].norm))]
    for i, d in enumerate([1, 2, 3], start=1):
        branches.append(
            F.relu(bn(F.conv2d(x, aspp.convs[i].weight, padding=d, dilation=d), aspp.convs[i].norm))
        )
    pooled = x.mean(dim=(2, 3), keepdim=True)
    pc = aspp.convs[4][1]
    pooled = F.relu(F.conv2d(pooled, pc.weight, pc.bias))
    branches.append(pooled.expand(-1, -1, 7, 9))  # bilinear upsampling of a 1x1 map is a broadcast
    p = aspp.project
    expected = F.relu(bn(F.conv2d(torch.cat(branches, 1), p.weight), p.norm))
    torch.testing.assert_close(aspp(x), expected)


def test_aspp_pool_kernel_size_and_dropout():
    torch.manual_seed(0)
    aspp = ASPP(4, 3, [1, 2, 3], norm="", activation=None, pool_kernel_size=(2, 3)).eval()
    assert isinstance(aspp.convs[4][0], nn.AvgPool2d)
    x = torch.randn(1, 4, 4, 6)
    pooled = F.conv2d(F.avg_pool2d(x, (2, 3), stride=1), aspp.convs[4][1].weight, aspp.convs[4][1].bias)
    torch.testing.assert_close(aspp.convs[4](x), pooled)
    with pytest.raises(ValueError, match="multiples of pool_kernel_size"):
        aspp(torch.randn(1, 4, 5, 6))

    drop = ASPP(4, 3, [1, 2, 3], norm="", activation=None, dropout=0.5)
    drop.eval()
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(drop(x), drop(x))  # no dropout in eval
    drop.train()
    torch.manual_seed(1)
    out = drop(x)
    assert (out == 0).any()


def test_aspp_depthwise_separable():
    aspp = ASPP(8, 4, [1, 2, 3], norm="BN", activation=F.relu, use_depthwise_separable_conv=True)
    assert isinstance(aspp.convs[0], Conv2d)
    for i, d in zip(range(1, 4), [1, 2, 3]):
        m = aspp.convs[i]
        assert isinstance(m, DepthwiseSeparableConv2d)
        assert m.depthwise.dilation == (d, d) and m.depthwise.padding == (d, d)
        assert isinstance(m.depthwise.norm, nn.BatchNorm2d) and isinstance(m.pointwise.norm, nn.BatchNorm2d)
    assert aspp(torch.randn(2, 8, 5, 5)).shape == (2, 4, 5, 5)


def test_aspp_argument_errors():
    with pytest.raises(ValueError, match="3 dilations"):
        ASPP(4, 4, [1, 2], norm="", activation=None)
    with pytest.raises(ValueError, match="dropout"):
        ASPP(4, 4, [1, 2, 3], norm="", activation=None, dropout=1.0)
    with pytest.raises(ValueError, match="pool_kernel_size"):
        ASPP(4, 4, [1, 2, 3], norm="", activation=None, pool_kernel_size=(0, 2))
