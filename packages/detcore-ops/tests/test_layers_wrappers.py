"""Conv2d (norm + activation, empty input), cat, nonzero_tuple and the torch aliases."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detcore.ops import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    FrozenBatchNorm2d,
    Linear,
    cat,
    get_norm,
    interpolate,
    nonzero_tuple,
)


class _Record(nn.Module):
    """Appends its name to a shared log and applies a distinctive affine map."""

    def __init__(self, name, log, fn):
        super().__init__()
        self.name, self.log, self.fn = name, log, fn

    def forward(self, x):
        self.log.append(self.name)
        return self.fn(x)


def test_conv2d_applies_conv_then_norm_then_activation():
    torch.manual_seed(0)
    log = []
    norm = _Record("norm", log, lambda t: 2 * t + 1)
    act = _Record("act", log, lambda t: t * t)
    conv = Conv2d(3, 4, 3, padding=1, norm=norm, activation=act)
    x = torch.randn(2, 3, 5, 5)
    out = conv(x)
    assert log == ["norm", "act"]
    y = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(out, (2 * y + 1) ** 2)


def test_conv2d_plain_equals_nn_conv2d_and_state_dict_names():
    torch.manual_seed(0)
    ours = Conv2d(3, 8, 3, stride=2, padding=1, bias=False, norm=get_norm("FrozenBN", 8), activation=F.relu)
    ref = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    ref.weight = ours.weight
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(ours(x), F.relu(ours.norm(ref(x))))
    assert list(ours.state_dict()) == [
        "weight",
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
    ]
    plain = Conv2d(3, 8, 1)
    assert plain.norm is None and plain.activation is None
    torch.testing.assert_close(plain(x), F.conv2d(x, plain.weight, plain.bias))


def test_conv2d_respects_padding_mode():
    torch.manual_seed(0)
    ours = Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    ref = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 2, 5, 6)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("norm", ["", "BN", "FrozenBN", "GN", "LN", "NaiveSyncBN_N"])
@pytest.mark.parametrize("training", [True, False])
def test_conv2d_empty_input(norm, training):
    conv = Conv2d(4, 32, 3, stride=2, padding=1, norm=get_norm(norm, 32), activation=F.relu)
    conv.train(training)
    x = torch.zeros(0, 4, 9, 7, requires_grad=True)
    out = conv(x)
    assert out.shape == (0, 32, 5, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_conv2d_empty_input_syncbn_training_raises():
    conv = Conv2d(4, 8, 1, norm=nn.SyncBatchNorm(8))
    with pytest.raises(ValueError, match="SyncBatchNorm does not support empty inputs"):
        conv(torch.zeros(0, 4, 3, 3))
    conv.eval()
    assert conv(torch.zeros(0, 4, 3, 3)).shape == (0, 8, 3, 3)


def test_conv2d_argument_errors():
    with pytest.raises(TypeError, match=r"norm must be an nn\.Module"):
        Conv2d(3, 4, 1, norm="BN")
    with pytest.raises(TypeError, match="activation must be a callable"):
        Conv2d(3, 4, 1, activation="relu")


def test_conv2d_export():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, norm=FrozenBatchNorm2d(4), activation=F.relu).eval()
    x = torch.randn(2, 3, 6, 6)
    ep = torch.export.export(conv, (x,))
    torch.testing.assert_close(ep.module()(x), conv(x))


def test_aliases_are_torch():
    assert ConvTranspose2d is nn.ConvTranspose2d
    assert Linear is nn.Linear
    assert BatchNorm2d is nn.BatchNorm2d
    assert interpolate is F.interpolate
    assert Linear(3, 2)(torch.zeros(0, 3)).shape == (0, 2)
    assert interpolate(torch.zeros(0, 2, 3, 3), scale_factor=2.0).shape == (0, 2, 6, 6)


def test_cat():
    a = torch.randn(2, 3)
    assert cat([a]) is a
    assert cat((a,), dim=1) is a
    b = torch.randn(4, 3)
    torch.testing.assert_close(cat([a, b]), torch.cat([a, b]))
    torch.testing.assert_close(cat([a, a], dim=1), torch.cat([a, a], dim=1))
    with pytest.raises(TypeError, match="tensors must be a list or tuple"):
        cat(a)
    with pytest.raises(ValueError, match="non-empty"):
        cat([])


@pytest.mark.parametrize(
    "x",
    [
        torch.tensor([0, 3, 0, 1]),
        torch.tensor([[True, False], [False, True], [True, True]]),
        torch.zeros(2, 0, 3),
        torch.zeros(3, 2),
        torch.tensor(5),
        torch.tensor(0.0),
        torch.arange(24).reshape(2, 3, 4) % 5 == 0,
    ],
)
def test_nonzero_tuple_matches_torch(x):
    ours = nonzero_tuple(x)
    ref = torch.nonzero(x, as_tuple=True)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.dtype == torch.int64
        torch.testing.assert_close(a, b)


def test_nonzero_tuple_hand_values():
    rows, cols = nonzero_tuple(torch.tensor([[0, 1], [2, 0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    (idx,) = nonzero_tuple(torch.tensor(7))
    assert idx.tolist() == [0]
