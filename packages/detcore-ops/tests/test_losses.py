"""Losses against torchvision.ops / torch, hand-computed values, degenerate boxes and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from torch.nn import functional as F

from detcore.ops import (
    ciou_loss,
    diou_loss,
    giou_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_jit,
    sigmoid_focal_loss_star,
    sigmoid_focal_loss_star_jit,
    smooth_l1_loss,
)


def _tv(name: str):
    """torchvision.ops.<name>, looked up when called (the compat session has no torchvision)."""

    def ref(*args, **kwargs):
        return getattr(tvo, name)(*args, **kwargs)

    return ref


BOX_LOSSES = [
    (giou_loss, _tv("generalized_box_iou_loss")),
    (diou_loss, _tv("distance_box_iou_loss")),
    (ciou_loss, _tv("complete_box_iou_loss")),
]


def _random_boxes(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 50
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 30 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


# ------------------------------------------------------------------------------------------------ smooth L1


def test_smooth_l1_hand_values():
    inp = torch.tensor([0.0, 0.5, -2.0, 3.0])
    tgt = torch.tensor([0.0, 0.0, 0.0, 1.0])
    # beta = 1: n < 1 -> 0.5 n^2, else n - 0.5
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=1.0), torch.tensor([0.0, 0.125, 1.5, 1.5]))
    # beta < 1e-5: L1
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=0.0), torch.tensor([0.0, 0.5, 2.0, 2.0]))
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=1e-6), torch.tensor([0.0, 0.5, 2.0, 2.0]))
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=1.0, reduction="sum"), torch.tensor(3.125))
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=1.0, reduction="mean"), torch.tensor(3.125 / 4))


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0 / 9, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_smooth_l1_matches_torch(beta, reduction):
    g = torch.Generator().manual_seed(0)
    inp = torch.randn(7, 4, generator=g, dtype=torch.float64)
    tgt = torch.randn(7, 4, generator=g, dtype=torch.float64)
    # torch's smooth_l1_loss has the same definition (not Huber), with beta == 0 meaning L1
    expected = F.smooth_l1_loss(inp, tgt, beta=beta, reduction=reduction)
    torch.testing.assert_close(smooth_l1_loss(inp, tgt, beta=beta, reduction=reduction), expected)


def test_losses_empty_mean_is_connected_zero():
    inp = torch.zeros(0, 4, requires_grad=True)
    for loss in (
        smooth_l1_loss(inp, torch.zeros(0, 4), beta=0.1, reduction="mean"),
        giou_loss(inp, torch.zeros(0, 4), reduction="mean"),
        diou_loss(inp, torch.zeros(0, 4), reduction="mean"),
        ciou_loss(inp, torch.zeros(0, 4), reduction="mean"),
        sigmoid_focal_loss(inp, torch.zeros(0, 4), reduction="mean"),
        sigmoid_focal_loss_star(inp, torch.zeros(0, 4), reduction="mean"),
    ):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert inp.grad.shape == (0, 4)
    assert smooth_l1_loss(inp, torch.zeros(0, 4), beta=0.1).shape == (0, 4)


# ------------------------------------------------------------------------------------------------ box losses


@pytest.mark.parametrize(("ours", "ref"), BOX_LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_losses_match_torchvision(ours, ref, reduction, dtype):
    b1 = _random_boxes(64, dtype, seed=1)
    b2 = _random_boxes(64, dtype, seed=2)
    b2[:8] = b1[:8]  # identical boxes
    b2[8:16] = b1[8:16] + 0.25  # heavily overlapping
    b2[16:24] = b1[16:24] + 200  # far apart
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours(b1, b2, reduction=reduction), ref(b1, b2, reduction=reduction), **tol)


@pytest.mark.parametrize(("ours", "ref"), BOX_LOSSES)
def test_box_losses_gradients_match_torchvision(ours, ref):
    b1 = _random_boxes(16, seed=3).requires_grad_()
    b2 = _random_boxes(16, seed=4)
    b1_ref = b1.detach().clone().requires_grad_()
    ours(b1, b2, reduction="sum").backward()
    ref(b1_ref, b2, reduction="sum").backward()
    torch.testing.assert_close(b1.grad, b1_ref.grad)


@pytest.mark.parametrize(("ours", "ref"), BOX_LOSSES)
def test_box_losses_batched_shapes(ours, ref):
    b1 = _random_boxes(24, seed=5).reshape(2, 3, 4, 4)
    b2 = _random_boxes(24, seed=6).reshape(2, 3, 4, 4)
    out = ours(b1, b2)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out.flatten(), ref(b1.reshape(-1, 4), b2.reshape(-1, 4)))


def test_box_losses_hand_values():
    eps = 1e-7
    # disjoint unit squares side by side: iou 0, enclosing area 3, union 2, centers 2 apart, diagonal^2 10
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(giou_loss(a, b), torch.tensor([1 + 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(diou_loss(a, b), torch.tensor([1 + 4 / 10], dtype=torch.float64))
    torch.testing.assert_close(
        ciou_loss(a, b), torch.tensor([1 + 4 / 10], dtype=torch.float64)
    )  # same aspect
    # [0,0,2,1] vs [0,0,1,1]: inter 1, union 2, enclosing [0,0,2,1] (diag^2 5), centers 0.5 apart
    a = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    iou = 1 / (2 + eps)
    torch.testing.assert_close(giou_loss(a, b), torch.tensor([1 - iou], dtype=torch.float64))
    diou = 1 - iou + 0.25 / (5 + eps)
    torch.testing.assert_close(diou_loss(a, b), torch.tensor([diou], dtype=torch.float64))
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - iou + v + eps)
    torch.testing.assert_close(ciou_loss(a, b), torch.tensor([diou + alpha * v], dtype=torch.float64))
    # identical boxes: zero loss
    for fn in (giou_loss, diou_loss, ciou_loss):
        torch.testing.assert_close(fn(a, a), torch.zeros(1, dtype=torch.float64), atol=1e-6, rtol=0)


def _degenerate_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    b1 = torch.tensor(
        [
            [1.0, 1.0, 1.0, 4.0],  # zero width
            [1.0, 1.0, 4.0, 1.0],  # zero height
            [2.0, 2.0, 2.0, 2.0],  # point
            [2.0, 2.0, 2.0, 2.0],  # point vs the same point
            [0.0, 0.0, 1.0, 1.0],  # ordinary vs point far away
            [0.0, 0.0, 1e6, 1e6],  # huge
            [5.0, 5.0, 6.0, 6.0],  # identical
        ],
        dtype=torch.float64,
    )
    b2 = torch.tensor(
        [
            [0.0, 0.0, 3.0, 3.0],
            [1.0, 1.0, 4.0, 1.0],
            [0.0, 0.0, 5.0, 5.0],
            [2.0, 2.0, 2.0, 2.0],
            [100.0, 100.0, 100.0, 100.0],
            [1.0, 1.0, 2.0, 2.0],
            [5.0, 5.0, 6.0, 6.0],
        ],
        dtype=torch.float64,
    )
    return b1, b2


@pytest.mark.parametrize("fn", [giou_loss, diou_loss, ciou_loss])
def test_box_losses_degenerate_boxes_have_finite_values_and_gradients(fn):
    b1, b2 = _degenerate_pairs()
    b1.requires_grad_()
    b2.requires_grad_()
    loss = fn(b1, b2)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(b1.grad).all() and torch.isfinite(b2.grad).all()


@pytest.mark.parametrize(("ours", "ref"), BOX_LOSSES)
def test_box_losses_degenerate_values_match_torchvision_where_finite(ours, ref):
    b1, b2 = _degenerate_pairs()
    expected = ref(b1, b2)
    finite = torch.isfinite(expected)
    assert finite.sum() >= 4  # torchvision: NaN CIoU for point boxes (0 / 0 aspect ratio)
    torch.testing.assert_close(ours(b1, b2)[finite], expected[finite])


def test_ciou_aspect_term_gradient_at_zero_height_is_the_limit_from_positive_heights():
    # atan2(w, h) is smooth at h = 0 < w (fvcore/torchvision's atan(w / h) gives NaN gradients there).
    # Only the aspect term alpha * v is compared: the intersection's clamp has a kink at h = 0 anyway.
    b2 = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)

    def aspect_grad_at(h):
        grads = []
        for fn in (ciou_loss, diou_loss):
            b1 = torch.tensor([[0.0, 0.0, 2.0, h]], dtype=torch.float64, requires_grad=True)
            fn(b1, b2).sum().backward()
            grads.append(b1.grad)
        return grads[0] - grads[1]

    g0 = aspect_grad_at(0.0)
    assert torch.isfinite(g0).all() and g0.abs().sum() > 0
    torch.testing.assert_close(g0, aspect_grad_at(1e-9), rtol=1e-6, atol=1e-6)


# ciou_loss is left out on purpose: its alpha is a constant for autograd (no_grad, as in the paper), so
# its gradient is not the derivative of its value; it is compared with torchvision's gradient above.
@pytest.mark.parametrize("fn", [giou_loss, diou_loss])
def test_box_losses_gradcheck(fn):
    b1 = _random_boxes(4, seed=7).requires_grad_()
    b2 = _random_boxes(4, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: fn(x, y), (b1, b2))


@pytest.mark.parametrize("fn", [giou_loss, diou_loss, ciou_loss])
def test_box_losses_argument_errors(fn):
    b = _random_boxes(3)
    with pytest.raises(ValueError, match="same shape"):
        fn(b, b[:2])
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        fn(b[:, :3], b[:, :3])
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        fn(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"boxes1 must be a torch\.Tensor"):
        fn(b.tolist(), b)
    with pytest.raises(TypeError, match="floating"):
        fn(b.long(), b.long())
    with pytest.raises(ValueError, match="reduction"):
        fn(b, b, reduction="avg")


def test_smooth_l1_argument_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="same shape"):
        smooth_l1_loss(x, torch.zeros(4), beta=1.0)
    with pytest.raises(ValueError, match="reduction"):
        smooth_l1_loss(x, x, beta=1.0, reduction="mean ")
    with pytest.raises(TypeError, match="beta"):
        smooth_l1_loss(x, x, beta=torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"target must be a torch\.Tensor"):
        smooth_l1_loss(x, [0.0, 0.0, 0.0], beta=1.0)


# ------------------------------------------------------------------------------------------------ focal


def _focal_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(6, 5, generator=g, dtype=dtype) * 3
    targets = (torch.rand(6, 5, generator=g) > 0.7).to(dtype)
    return inputs, targets


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_focal_loss_matches_torchvision(alpha, gamma, reduction, dtype):
    inputs, targets = _focal_inputs(dtype)
    ours = sigmoid_focal_loss(inputs, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = tvo.sigmoid_focal_loss(inputs, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref)


def test_sigmoid_focal_loss_gradients_match_torchvision():
    inputs, targets = _focal_inputs()
    a = inputs.clone().requires_grad_()
    b = inputs.clone().requires_grad_()
    sigmoid_focal_loss(a, targets, reduction="sum").backward()
    tvo.sigmoid_focal_loss(b, targets, reduction="sum").backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_loss(x, targets[:2]), (inputs[:2].clone().requires_grad_(),)
    )


def test_sigmoid_focal_loss_hand_values():
    # logit 0, target 1: p = 0.5, CE = log 2, p_t = 0.5 -> 0.25 * log 2 * 0.25
    out = sigmoid_focal_loss(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.25 * math.log(2) * 0.25], dtype=torch.float64))
    # logit 0, target 0: alpha_t = 0.75
    out = sigmoid_focal_loss(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.75 * math.log(2) * 0.25], dtype=torch.float64))
    # logit 2, target 1, gamma 1, alpha -1: CE = log(1 + e^-2), 1 - p_t = sigmoid(-2)
    out = sigmoid_focal_loss(torch.tensor([2.0], dtype=torch.float64), torch.ones(1), alpha=-1, gamma=1)
    expected = math.log(1 + math.exp(-2)) / (1 + math.exp(2))
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))


def test_sigmoid_focal_loss_half_and_integer_targets():
    inputs, targets = _focal_inputs(torch.float32)
    out = sigmoid_focal_loss(inputs.half(), targets.long())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sigmoid_focal_loss(inputs.half().float(), targets))
    torch.testing.assert_close(
        sigmoid_focal_loss(inputs, targets.bool()), sigmoid_focal_loss(inputs, targets)
    )


def _focal_star_reference(x, t, alpha, gamma):
    z = gamma * x * (2 * t - 1)
    loss = torch.log1p(torch.exp(-z)) / gamma
    if alpha >= 0:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


@pytest.mark.parametrize(("alpha", "gamma"), [(-1.0, 1.0), (0.25, 2.0), (0.5, 0.5)])
def test_sigmoid_focal_loss_star(alpha, gamma):
    inputs, targets = _focal_inputs()
    out = sigmoid_focal_loss_star(inputs, targets, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(out, _focal_star_reference(inputs, targets, alpha, gamma))
    torch.testing.assert_close(
        sigmoid_focal_loss_star(inputs, targets, alpha=alpha, gamma=gamma, reduction="sum"),
        _focal_star_reference(inputs, targets, alpha, gamma).sum(),
    )
    # hand value: logit 0, gamma 1 -> log 2 for either target
    torch.testing.assert_close(
        sigmoid_focal_loss_star(
            torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
        ),
        torch.full((2,), math.log(2), dtype=torch.float64),
    )


def test_focal_jit_names_are_the_functions():
    assert sigmoid_focal_loss_jit is sigmoid_focal_loss
    assert sigmoid_focal_loss_star_jit is sigmoid_focal_loss_star


def test_sigmoid_focal_loss_compiles_fullgraph():
    inputs, targets = _focal_inputs(torch.float32)
    compiled = torch.compile(
        lambda x, t: sigmoid_focal_loss(x, t, reduction="sum"), fullgraph=True, backend="eager"
    )
    torch.testing.assert_close(
        compiled(inputs, targets), sigmoid_focal_loss(inputs, targets, reduction="sum")
    )


def test_focal_argument_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(x, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="inputs must be a floating"):
        sigmoid_focal_loss(x.long(), x)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, x, reduction="batchmean")
    with pytest.raises(ValueError, match="gamma must be > 0"):
        sigmoid_focal_loss_star(x, x, gamma=0)
    with pytest.raises(TypeError, match="alpha"):
        sigmoid_focal_loss(x, x, alpha=None)
