"""FrozenBatchNorm2d, fold_frozen_bn_into_conv, NaiveSyncBatchNorm, LayerNorm and get_norm."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detcore.ops import (
    Conv2d,
    FrozenBatchNorm2d,
    LayerNorm,
    NaiveSyncBatchNorm,
    fold_frozen_bn_into_conv,
    get_norm,
)
from detcore.ops.layers import batch_norm as bn_mod


def _random_stats(c: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, generator=g, dtype=dtype)
    bias = torch.randn(c, generator=g, dtype=dtype)
    mean = torch.randn(c, generator=g, dtype=dtype)
    var = torch.rand(c, generator=g, dtype=dtype) + 0.1
    return weight, bias, mean, var


def _frozen(c: int, dtype=torch.float64, eps: float = 1e-5, seed: int = 0) -> FrozenBatchNorm2d:
    m = FrozenBatchNorm2d(c, eps=eps).to(dtype)
    w, b, mu, var = _random_stats(c, dtype, seed)
    m.weight.copy_(w)
    m.bias.copy_(b)
    m.running_mean.copy_(mu)
    m.running_var.copy_(var)
    return m


# ------------------------------------------------------------------------------------------------ Frozen BN


def test_frozen_bn_default_is_identity():
    m = FrozenBatchNorm2d(3)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(m(x), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(m(x.requires_grad_()), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_frozen_bn_equals_batchnorm_eval_float64(requires_grad):
    c = 6
    frozen = _frozen(c, eps=1e-3)
    ref = nn.BatchNorm2d(c, eps=1e-3).double().eval()
    w, b, mu, var = _random_stats(c)
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
        ref.running_mean.copy_(mu)
        ref.running_var.copy_(var)
    x = torch.randn(3, c, 5, 4, dtype=torch.float64, requires_grad=requires_grad)
    out = frozen(x)
    torch.testing.assert_close(out, ref(x), rtol=1e-12, atol=1e-12)
    # and against the formula written out
    expected = (x - mu[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-3) * w[:, None, None] + b[
        :, None, None
    ]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_frozen_bn_gradient_is_scale_and_buffers_get_none():
    c = 4
    frozen = _frozen(c)
    x = torch.randn(2, c, 3, 3, dtype=torch.float64, requires_grad=True)
    frozen(x).sum().backward()
    scale = frozen.weight / torch.sqrt(frozen.running_var + frozen.eps)
    torch.testing.assert_close(x.grad, scale[None, :, None, None].expand_as(x))
    assert list(frozen.parameters()) == []
    assert all(not b.requires_grad for b in frozen.buffers())


def test_frozen_bn_half_input_requires_grad_path():
    frozen = _frozen(4, dtype=torch.float32)
    x = torch.randn(2, 4, 3, 3)
    out = frozen(x.half().requires_grad_())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), frozen(x), rtol=1e-2, atol=1e-2)


def test_frozen_bn_state_dict_keys_and_repr():
    m = FrozenBatchNorm2d(8, eps=1e-4)
    assert list(m.state_dict().keys()) == ["weight", "bias", "running_mean", "running_var"]
    assert m.state_dict()._metadata[""]["version"] == 3
    assert "num_batches_tracked" not in m.state_dict()
    assert repr(m) == "FrozenBatchNorm2d(num_features=8, eps=0.0001)"
    model = nn.Sequential()
    model.add_module("conv1", Conv2d(3, 8, 3, bias=False, norm=FrozenBatchNorm2d(8)))
    assert list(model.state_dict().keys()) == [
        "conv1.weight",
        "conv1.norm.weight",
        "conv1.norm.bias",
        "conv1.norm.running_mean",
        "conv1.norm.running_var",
    ]


def test_frozen_bn_loads_state_dict_without_running_stats():
    # Caffe2-converted checkpoints: a plain dict (no version metadata) with only weight and bias.
    model = nn.Sequential(nn.Conv2d(2, 3, 1), FrozenBatchNorm2d(3))
    model[1].running_mean.fill_(7.0)
    model[1].running_var.fill_(9.0)
    sd = {
        "0.weight": torch.randn(3, 2, 1, 1),
        "0.bias": torch.randn(3),
        "1.weight": torch.tensor([1.0, 2.0, 3.0]),
        "1.bias": torch.tensor([0.5, 0.0, -0.5]),
    }
    result = model.load_state_dict(sd, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    torch.testing.assert_close(model[1].running_mean, torch.zeros(3))
    torch.testing.assert_close(model[1].running_var, torch.ones(3))  # as detectron2 fills it
    assert "1.running_mean" not in sd  # load_state_dict fills a copy: the caller's dict is unchanged
    x = torch.randn(1, 3, 2, 2)
    expected = x * (torch.tensor([1.0, 2.0, 3.0]) / (1 + 1e-5) ** 0.5)[:, None, None]
    expected = expected + torch.tensor([0.5, 0.0, -0.5])[:, None, None]
    torch.testing.assert_close(model[1](x), expected)


def test_frozen_bn_version3_state_dict_missing_stats_is_an_error():
    src = FrozenBatchNorm2d(3)
    sd = src.state_dict()  # carries version 3 metadata
    del sd["running_mean"], sd["running_var"]
    with pytest.raises(RuntimeError, match="running_mean"):
        FrozenBatchNorm2d(3).load_state_dict(sd)


def test_frozen_bn_state_dict_roundtrip():
    src = _frozen(5, dtype=torch.float32)
    dst = FrozenBatchNorm2d(5)
    dst.load_state_dict(src.state_dict())
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_frozen_bn_export():
    m = _frozen(4, dtype=torch.float32)
    x = torch.randn(2, 4, 5, 5)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


def test_convert_frozen_batchnorm_nested_model():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU())
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.BatchNorm2d(4),
        inner,
        nn.SyncBatchNorm(4),
        NaiveSyncBatchNorm(4),
        nn.BatchNorm2d(4, affine=False),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            if m.affine:
                with torch.no_grad():
                    m.weight.uniform_(0.5, 2)
                    m.bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    # SyncBatchNorm in eval on CPU without a process group behaves as BatchNorm2d
    expected = model(x)
    keys_before = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]

    converted = FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert converted is model
    for idx in (1, 3, 4, 5):
        assert type(model[idx]) is FrozenBatchNorm2d
    assert type(model[2][1]) is FrozenBatchNorm2d
    assert model[2][1].eps == 1e-3
    # same names (a FrozenBatchNorm2d always has weight/bias, also where the BatchNorm2d was not affine)
    keys_after = list(model.state_dict().keys())
    assert [k for k in keys_after if k not in ("5.weight", "5.bias")] == keys_before
    assert [k for k in keys_after if k.startswith("5.")] == [
        "5.weight",
        "5.bias",
        "5.running_mean",
        "5.running_var",
    ]
    torch.testing.assert_close(model(x), expected)
    # affine=False: identity affine
    torch.testing.assert_close(model[5].weight, torch.ones(4))
    torch.testing.assert_close(model[5].bias, torch.zeros(4))


def test_convert_frozen_batchnorm_returns_new_module_and_copies():
    bn = nn.BatchNorm2d(3).double()
    bn.running_mean.fill_(0.5)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen is not bn
    assert frozen.running_mean.dtype == torch.float64
    bn.running_mean.fill_(1.5)  # not aliased
    torch.testing.assert_close(frozen.running_mean, torch.full((3,), 0.5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ folding


@pytest.mark.parametrize(
    "conv_kwargs",
    [
        dict(kernel_size=3, padding=1, bias=False),
        dict(kernel_size=3, stride=2, padding=2, dilation=2, bias=True),
        dict(kernel_size=1, groups=2, bias=True),
    ],
)
def test_fold_frozen_bn_into_conv(conv_kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **conv_kwargs)
    bn = _frozen(6, dtype=torch.float32, seed=1)
    x = torch.randn(2, 4, 9, 7)
    fused = fold_frozen_bn_into_conv(conv, bn)
    assert type(fused) is nn.Conv2d and fused.bias is not None
    assert (fused.stride, fused.padding, fused.dilation, fused.groups) == (
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )
    torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    # inputs untouched
    assert (conv.bias is None) == (not conv_kwargs["bias"])


def test_fold_detcore_conv_keeps_activation_and_batchnorm_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    conv = Conv2d(3, 5, 3, padding=1, bias=False, norm=bn, activation=F.relu).eval()
    fused = fold_frozen_bn_into_conv(conv, conv.norm)
    assert isinstance(fused, Conv2d) and fused.norm is None and fused.activation is F.relu
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fused(x), conv(x), rtol=1e-5, atol=1e-5)


def test_fold_errors():
    conv = nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match="num_features"):
        fold_frozen_bn_into_conv(conv, FrozenBatchNorm2d(5))
    with pytest.raises(TypeError, match="bn must be"):
        fold_frozen_bn_into_conv(conv, nn.GroupNorm(2, 4))
    with pytest.raises(TypeError, match="conv must be"):
        fold_frozen_bn_into_conv(nn.Linear(3, 4), FrozenBatchNorm2d(4))
    with pytest.raises(ValueError, match="running statistics"):
        fold_frozen_bn_into_conv(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"conv\.norm"):
        fold_frozen_bn_into_conv(Conv2d(3, 4, 1, norm=FrozenBatchNorm2d(4)), FrozenBatchNorm2d(4))


# ------------------------------------------------------------------------------------------------ LayerNorm


def test_layer_norm_normalizes_over_channels():
    c = 5
    ln = LayerNorm(c).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(2, c, 3, 4, dtype=torch.float64)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (c,), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected)
    assert sorted(n for n, _ in ln.named_parameters()) == ["bias", "weight"]


# ------------------------------------------------------------------------------------------------ get_norm


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("nnSyncBN", nn.SyncBatchNorm),
        ("NaiveSyncBN", NaiveSyncBatchNorm),
        ("naiveSyncBN", NaiveSyncBatchNorm),
        ("NaiveSyncBN_N", NaiveSyncBatchNorm),
        ("naiveSyncBN_N", NaiveSyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("GN", nn.GroupNorm),
        ("LN", LayerNorm),
    ],
)
def test_get_norm_names(name, cls):
    m = get_norm(name, 64)
    assert type(m) is cls
    if cls is nn.GroupNorm:
        assert m.num_groups == 32 and m.num_channels == 64
    elif cls is LayerNorm:
        assert m.normalized_shape == (64,)
    else:
        assert m.num_features == 64
    if cls is NaiveSyncBatchNorm:
        assert m._stats_mode == ("N" if name.endswith("_N") else "")


def test_get_norm_empty_callable_and_errors():
    assert get_norm("", 8) is None
    assert get_norm(None, 8) is None
    m = get_norm(lambda c: nn.GroupNorm(2, c), 8)
    assert isinstance(m, nn.GroupNorm) and m.num_channels == 8
    with pytest.raises(ValueError, match=r"'FrozenBN'.*got 'frozenbn'"):
        get_norm("frozenbn", 8)
    with pytest.raises(TypeError, match="norm must be"):
        get_norm(3, 8)


# ------------------------------------------------------------------------------------------------ NaiveSyncBN


def test_naive_sync_bn_single_process_is_batchnorm():
    torch.manual_seed(0)
    ours = NaiveSyncBatchNorm(4, stats_mode="N")
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_naive_sync_bn_bad_stats_mode():
    with pytest.raises(ValueError, match="stats_mode"):
        NaiveSyncBatchNorm(4, stats_mode="M")


def _concat_stats(xs):
    cat = torch.cat(xs)
    return cat.mean(dim=[0, 2, 3]), cat.var(dim=[0, 2, 3], unbiased=False)


def test_naive_sync_stats_equal_weights_same_shapes():
    xs = [torch.randn(2, 3, 4, 5, dtype=torch.float64) for _ in range(3)]
    reduced = sum(bn_mod._local_stats(x, "") for x in xs)
    mean, var, scale = bn_mod._global_stats(reduced, 3, 3, "")
    exp_mean, exp_var = _concat_stats(xs)
    torch.testing.assert_close(mean, exp_mean)
    torch.testing.assert_close(var, exp_var)
    assert scale == 1.0


def test_naive_sync_stats_equal_weights_different_batches_averages_workers():
    # stats_mode "": each worker counts equally, whatever its batch size (hand-checkable case, C=1).
    x0 = torch.tensor([1.0, 3.0], dtype=torch.float64).reshape(2, 1, 1, 1)  # mean 2, meansqr 5
    x1 = torch.tensor([10.0], dtype=torch.float64).reshape(1, 1, 1, 1)  # mean 10, meansqr 100
    reduced = bn_mod._local_stats(x0, "") + bn_mod._local_stats(x1, "")
    mean, var, _ = bn_mod._global_stats(reduced, 1, 2, "")
    torch.testing.assert_close(mean, torch.tensor([6.0], dtype=torch.float64))
    torch.testing.assert_close(var, torch.tensor([52.5 - 36.0], dtype=torch.float64))


def test_naive_sync_stats_weighted_by_batch_size():
    xs = [torch.randn(n, 3, 4, 5, dtype=torch.float64) for n in (1, 4, 0, 2)]
    reduced = sum(bn_mod._local_stats(x, "N") for x in xs)
    mean, var, scale = bn_mod._global_stats(reduced, 3, len(xs), "N")
    exp_mean, exp_var = _concat_stats(xs)
    torch.testing.assert_close(mean, exp_mean)
    torch.testing.assert_close(var, exp_var)
    assert float(scale) == 1.0


def test_naive_sync_stats_all_empty_means_no_update():
    xs = [torch.randn(0, 3, 4, 5) for _ in range(2)]
    reduced = sum(bn_mod._local_stats(x, "N") for x in xs)
    mean, var, scale = bn_mod._global_stats(reduced, 3, 2, "N")
    assert float(scale) == 0.0
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()


def test_naive_sync_stats_zero_batch_equal_weights_raises():
    with pytest.raises(ValueError, match="zero batch size"):
        bn_mod._local_stats(torch.randn(0, 3, 2, 2), "")


def _simulate(monkeypatch, module, xs, stats_mode):
    """Run ``module`` as each of len(xs) workers; the all-reduce adds the other workers' contributions,
    computed with gradient from their inputs, so the summed loss has the gradient of real training."""
    world = len(xs)
    monkeypatch.setattr(bn_mod, "_world_size", lambda: world)
    outs = []
    for k, x in enumerate(xs):
        others = [bn_mod._local_stats(xs[j], stats_mode) for j in range(world) if j != k]
        monkeypatch.setattr(bn_mod, "_all_reduce_sum", lambda v, others=others: v + sum(others))
        outs.append(module(x))
    return outs


@pytest.mark.parametrize(("stats_mode", "batches"), [("", (2, 2, 2)), ("N", (1, 3, 0, 2))])
def test_naive_sync_forward_backward_matches_batchnorm_over_concatenation(monkeypatch, stats_mode, batches):
    torch.manual_seed(0)
    c = 3
    xs = [torch.randn(n, c, 4, 5, dtype=torch.float64, requires_grad=True) for n in batches]
    module = NaiveSyncBatchNorm(c, stats_mode=stats_mode, eps=1e-3).double()
    with torch.no_grad():
        module.weight.uniform_(0.5, 2)
        module.bias.uniform_(-1, 1)
    ref = copy.deepcopy(module)
    outs = _simulate(monkeypatch, module, xs, stats_mode)
    upstream = [torch.randn_like(o) for o in outs]
    sum((o * g).sum() for o, g in zip(outs, upstream)).backward()

    xs_ref = [x.detach().clone().requires_grad_() for x in xs]
    cat = torch.cat(xs_ref)
    out_ref = F.batch_norm(cat, None, None, ref.weight, ref.bias, training=True, eps=1e-3)
    (out_ref * torch.cat(upstream)).sum().backward()

    torch.testing.assert_close(torch.cat(outs), out_ref)
    for x, xr in zip(xs, xs_ref):
        torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(module.weight.grad, ref.weight.grad)
    torch.testing.assert_close(module.bias.grad, ref.bias.grad)


def test_naive_sync_running_stats_update(monkeypatch):
    torch.manual_seed(0)
    xs = [torch.randn(2, 3, 4, 4, dtype=torch.float64) for _ in range(2)]
    module = NaiveSyncBatchNorm(3, momentum=0.2).double()
    monkeypatch.setattr(bn_mod, "_world_size", lambda: 2)
    other = bn_mod._local_stats(xs[1], "")
    monkeypatch.setattr(bn_mod, "_all_reduce_sum", lambda v: v + other)
    module(xs[0])
    mean, var = _concat_stats(xs)
    torch.testing.assert_close(module.running_mean, 0.2 * mean)
    torch.testing.assert_close(module.running_var, 0.8 + 0.2 * var)  # biased variance, as detectron2
    assert int(module.num_batches_tracked) == 1


def test_naive_sync_all_empty_keeps_running_stats(monkeypatch):
    module = NaiveSyncBatchNorm(3, stats_mode="N")
    monkeypatch.setattr(bn_mod, "_world_size", lambda: 2)
    monkeypatch.setattr(bn_mod, "_all_reduce_sum", lambda v: v * 2)
    out = module(torch.randn(0, 3, 4, 4))
    assert out.shape == (0, 3, 4, 4)
    torch.testing.assert_close(module.running_mean, torch.zeros(3))
    torch.testing.assert_close(module.running_var, torch.ones(3))


def test_naive_sync_half_input(monkeypatch):
    module = NaiveSyncBatchNorm(3)
    monkeypatch.setattr(bn_mod, "_world_size", lambda: 2)
    monkeypatch.setattr(bn_mod, "_all_reduce_sum", lambda v: v * 2)  # two identical workers
    x = torch.randn(2, 3, 4, 4)
    out = module(x.half())
    assert out.dtype == torch.float16
    ref = F.batch_norm(x, None, None, module.weight, module.bias, training=True)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_naive_sync_eval_in_distributed_is_batchnorm_eval(monkeypatch):
    module = NaiveSyncBatchNorm(3).eval()
    module.running_mean.fill_(0.5)
    monkeypatch.setattr(bn_mod, "_world_size", lambda: 4)
    monkeypatch.setattr(bn_mod, "_all_reduce_sum", lambda v: pytest.fail("no all-reduce in eval"))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(
        module(x), F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias)
    )
