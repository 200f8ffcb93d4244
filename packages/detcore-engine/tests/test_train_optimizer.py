"""Optimizer parameter groups, gradient clipping and LR schedules (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detcore.engine.train import (
    GradientClipConfig,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)
from detcore.ops import FrozenBatchNorm2d, LayerNorm


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight, bias
        self.bn = nn.BatchNorm2d(4)  # norm weight, norm bias
        self.gn = nn.GroupNorm(2, 4)  # norm weight, norm bias
        self.ln = LayerNorm(4)  # detcore LayerNorm: norm weight, norm bias
        self.frozen = FrozenBatchNorm2d(4)  # buffers only
        self.fc = nn.Linear(4, 2, bias=False)
        self.shared = self.fc  # same module twice: parameters must appear once
        self.fixed = nn.Linear(2, 2)
        self.fixed.requires_grad_(False)


def _group_of(groups, p):
    found = [g for g in groups if any(q is p for q in g["params"])]
    assert len(found) == 1
    return found[0]


def test_param_groups_norm_and_bias_weight_decay():
    net = _Net()
    opt = build_optimizer(
        net,
        "SGD",
        0.1,
        momentum=0.9,
        weight_decay=1e-4,
        weight_decay_norm=0.0,
        weight_decay_bias=1e-5,
        bias_lr_factor=2.0,
    )
    groups = opt.param_groups
    all_params = [p for g in groups for p in g["params"]]
    # conv w+b, bn w+b, gn w+b, ln w+b, fc w; 'fixed' (frozen) excluded; no duplicates
    assert len(all_params) == 9
    assert len({id(p) for p in all_params}) == 9
    expect = {
        net.conv.weight: (0.1, 1e-4),
        net.fc.weight: (0.1, 1e-4),
        net.conv.bias: (0.2, 1e-5),
        net.bn.weight: (0.1, 0.0),
        net.gn.weight: (0.1, 0.0),
        net.ln.weight: (0.1, 0.0),
        # bias override comes after the norm one (detectron2): norm biases get weight_decay_bias
        net.bn.bias: (0.2, 1e-5),
        net.gn.bias: (0.2, 1e-5),
        net.ln.bias: (0.2, 1e-5),
    }
    for p, (lr, wd) in expect.items():
        g = _group_of(groups, p)
        assert g["lr"] == pytest.approx(lr, rel=0, abs=1e-12)
        assert g["weight_decay"] == wd
        assert g["momentum"] == 0.9
    # identical hyper-parameters are merged: (0.1,1e-4), (0.2,1e-5), (0.1,0.0)
    assert len(groups) == 3


def test_default_weight_decay_bias_is_weight_decay():
    net = _Net()
    groups = get_default_optimizer_params(net, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0)
    assert _group_of(groups, net.conv.bias)["weight_decay"] == 1e-4
    assert _group_of(groups, net.bn.bias)["weight_decay"] == 0.0
    assert _group_of(groups, net.conv.bias)["lr"] == 0.1


def test_adamw_and_bad_names():
    net = _Net()
    opt = build_optimizer(net, "AdamW", 1e-3, betas=(0.8, 0.9), weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="name"):
        build_optimizer(net, "Adam", 1e-3)
    with pytest.raises(ValueError, match="base_lr"):
        build_optimizer(net, "SGD", 0.0)
    with pytest.raises(ValueError, match="clip_type"):
        GradientClipConfig("bogus", 1.0)


def _grads_for(opt_params, grads):
    for p, g in zip(opt_params, grads):
        p.grad = g.clone()


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_gradient_clipping(clip_type):
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(3))
    model.norm = nn.LayerNorm(2)  # a "norm" module: its own group (weight_decay_norm)
    a, b = model.a, model.norm.weight
    with torch.no_grad():
        b.zero_()
    opt = build_optimizer(
        model, "SGD", 1.0, momentum=0.0, weight_decay=0.0, weight_decay_norm=0.5,
        clip_gradients=GradientClipConfig(clip_type, 1.0),
    )  # fmt: skip
    for g in opt.param_groups:
        g["weight_decay"] = 0.0  # compare the plain gradient step
    ga, gb = torch.tensor([3.0, -0.5, 4.0]), torch.tensor([0.0, 2.0])
    a.grad, b.grad = ga.clone(), gb.clone()
    model.norm.bias.grad = torch.zeros(2)
    opt.step()
    if clip_type == "value":
        exp_a, exp_b = ga.clamp(-1, 1), gb.clamp(-1, 1)
    elif clip_type == "norm":
        # per group: a's group norm = sqrt(9 + .25 + 16); b's group (norm params b + bias) norm = 2
        exp_a, exp_b = ga / math.sqrt(25.25), gb / 2.0
    else:
        total = math.sqrt(25.25 + 4.0)
        exp_a, exp_b = ga / total, gb / total
    torch.testing.assert_close(a.detach(), -exp_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach(), -exp_b, rtol=1e-5, atol=1e-6)


def _lrs(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _opt(lr=0.1):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_multistep_with_linear_warmup():
    opt = _opt(0.1)
    sched = build_lr_scheduler(
        opt, "WarmupMultiStepLR", 20, steps=(8, 15, 30), gamma=0.1, warmup_iters=4, warmup_factor=0.001
    )
    lrs = _lrs(sched, opt, 20)
    # warm-up: alpha = i/4, lr = 0.1 * (1*alpha + 0.001*(1-alpha))
    for i in range(4):
        alpha = i / 4
        assert lrs[i] == pytest.approx(0.1 * (alpha + 0.001 * (1 - alpha)), rel=1e-12)
    assert lrs[4] == pytest.approx(0.1)
    assert lrs[7] == pytest.approx(0.1)
    assert lrs[8] == pytest.approx(0.01)  # bisect_right: the step applies at the milestone
    assert lrs[14] == pytest.approx(0.01)
    assert lrs[15] == pytest.approx(0.001)
    assert lrs[19] == pytest.approx(0.001)  # milestone 30 > max_iter is dropped


def test_cosine_with_warmup_and_end_value():
    opt = _opt(0.2)
    sched = build_lr_scheduler(opt, "WarmupCosineLR", 10, base_lr_end=0.02, warmup_iters=2, warmup_factor=0.5)
    lrs = _lrs(sched, opt, 10)
    end = 0.1  # 0.02 / 0.2

    def cos(i):
        return end + 0.5 * (1 - end) * (1 + math.cos(math.pi * i / 10))

    # warm-up from 0.5 * cos(0) = 0.5 to cos(2) linearly
    assert lrs[0] == pytest.approx(0.2 * 0.5)
    assert lrs[1] == pytest.approx(0.2 * (cos(2) * 0.5 + 0.5 * 0.5))
    for i in (2, 5, 9):
        assert lrs[i] == pytest.approx(0.2 * cos(i))
    assert lrs[5] == pytest.approx(0.2 * (0.1 + 0.45))


def test_constant_warmup_and_state_dict_roundtrip():
    opt = _opt(1.0)
    sched = build_lr_scheduler(
        opt, "WarmupMultiStepLR", 10, steps=(5,), warmup_iters=3, warmup_factor=0.25, warmup_method="constant"
    )
    lrs = _lrs(sched, opt, 4)
    assert lrs == [0.25, 0.25, 0.25, 1.0]
    state = sched.state_dict()
    opt2 = _opt(1.0)
    sched2 = build_lr_scheduler(
        opt2,
        "WarmupMultiStepLR",
        10,
        steps=(5,),
        warmup_iters=3,
        warmup_factor=0.25,
        warmup_method="constant",
    )
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr() == [1.0]
    opt2.step()
    sched2.step()  # recompute from the restored counter
    # continuing: iteration 5 -> 0.1
    assert sched2.last_epoch == 5
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_method"):
        build_lr_scheduler(_opt(), "WarmupMultiStepLR", 10, warmup_method="exp")
    with pytest.raises(ValueError, match="name"):
        build_lr_scheduler(_opt(), "Poly", 10)
