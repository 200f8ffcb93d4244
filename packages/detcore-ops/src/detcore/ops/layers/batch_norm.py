"""Normalization layers with detectron2's semantics and state-dict names.

``FrozenBatchNorm2d`` (fixed statistics and affine, the backbone default), ``NaiveSyncBatchNorm``
(cross-worker batch statistics by all-reducing moments), ``LayerNorm`` over the channels of NCHW
inputs, ``get_norm`` (build one of them by name), and ``fold_frozen_bn_into_conv`` (fuse a frozen
normalization into the preceding convolution for inference).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.ops.layers.wrappers import Conv2d

__all__ = [
    "FrozenBatchNorm2d",
    "LayerNorm",
    "NaiveSyncBatchNorm",
    "fold_frozen_bn_into_conv",
    "get_norm",
]


def _broadcast_shape(x: Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel [C] vector against x [N, C, *]."""
    return (1, -1) + (1,) * (x.dim() - 2)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers (not trained).

    Computes ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel. The four
    tensors are buffers named ``weight``, ``bias``, ``running_mean`` and ``running_var`` (detectron2's
    state-dict names), initialised to the identity transform (``running_var = 1 - eps``).

    Caffe2/MSRA backbone checkpoints carry only ``weight`` and ``bias`` (already folded from the four BN
    tensors). Loading a state dict without version metadata (a plain dict, e.g. converted from a
    ``.pkl``) fills a missing ``running_mean`` with zeros and a missing ``running_var`` with ones, exactly
    as detectron2 does (so outputs match detectron2's for such checkpoints; note ``sqrt(1 + eps)`` is
    then in the denominator). State dicts saved from this module carry version 3 metadata, and missing
    keys in them are reported as missing as usual.

    Forward: when ``x.requires_grad`` the transform is ``x * scale + shift`` with ``scale`` and ``shift``
    computed from the buffers (no gradient is computed for the buffers); otherwise a single
    ``F.batch_norm(..., training=False)`` call, which ``torch.export`` and ``torch.compile`` lower to an
    inference batch norm.

    Args:
        num_features (int): number of channels C.
        eps (float): added to ``running_var`` before the square root.

    Shape:
        x (Tensor[N, C, H, W]) -> Tensor[N, C, H, W] (any ``[N, C, *]`` works).
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            # F.batch_norm's backward would also compute gradients for weight/bias; this path does not.
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            shape = _broadcast_shape(x)
            return x * scale.reshape(shape).to(x.dtype) + shift.reshape(shape).to(x.dtype)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Checkpoints from before running statistics existed (Caffe2 backbones): fill them in.
            if prefix + "running_mean" not in state_dict:
                state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
            if prefix + "running_var" not in state_dict:
                state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a ``FrozenBatchNorm2d``.

        The affine parameters (when ``affine=True``), running statistics (when tracked) and ``eps`` are
        copied (cloned, on the same device and dtype).

        Args:
            module (nn.Module): a batch norm layer or a module containing some.

        Returns:
            nn.Module: a new ``FrozenBatchNorm2d`` if ``module`` itself is a BatchNorm2d/SyncBatchNorm
            (including subclasses such as ``NaiveSyncBatchNorm``); otherwise ``module``, converted in place
            (children are replaced recursively).
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            ref = module.running_mean if module.running_mean is not None else module.weight
            res = cls(module.num_features, eps=module.eps)
            if ref is not None:
                res = res.to(device=ref.device, dtype=ref.dtype)
            with torch.no_grad():
                if module.affine:
                    res.weight.copy_(module.weight.detach())
                    res.bias.copy_(module.bias.detach())
                if module.running_mean is not None and module.running_var is not None:
                    res.running_mean.copy_(module.running_mean)
                    res.running_var.copy_(module.running_var)
            return res
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def fold_frozen_bn_into_conv(conv: nn.Conv2d, bn: FrozenBatchNorm2d | nn.BatchNorm2d) -> nn.Conv2d:
    """Fuse an inference-time batch norm that follows ``conv`` into a new convolution with bias.

    Returns a new convolution ``c`` with ``c(x) == bn(conv(x))`` (up to rounding; folding is computed in
    float64 and cast back to the conv's dtype). Neither input is modified.

    Args:
        conv (nn.Conv2d): the convolution (``torch.nn.Conv2d`` or :class:`detcore.ops.Conv2d`), with or
            without bias. For a detcore ``Conv2d``, ``conv.norm`` must be None or ``bn`` itself; the result
            is a detcore ``Conv2d`` with ``norm=None`` and a copy of ``conv.activation``, so
            ``result(x) == conv(x)`` when ``conv.norm is bn``.
        bn (FrozenBatchNorm2d | nn.BatchNorm2d): the normalization that follows; a ``BatchNorm2d`` is
            folded with its running statistics (its eval-mode behaviour) and must track them.

    Returns:
        nn.Conv2d: a new convolution of the same class, hyper-parameters, device and dtype, with bias.

    Raises:
        TypeError: ``conv`` or ``bn`` has the wrong type.
        ValueError: channel counts differ, ``bn`` has no running statistics, or ``conv.norm`` is another
            module than ``bn``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
    if not isinstance(bn, (FrozenBatchNorm2d, nn.BatchNorm2d)):
        raise TypeError(f"bn must be a FrozenBatchNorm2d or torch.nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"bn must have one channel per conv output channel: conv.out_channels={conv.out_channels}, "
            f"bn.num_features={bn.num_features}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must have running statistics (track_running_stats=True) to be folded")
    is_detcore_conv = isinstance(conv, Conv2d)
    if is_detcore_conv and conv.norm is not None and conv.norm is not bn:
        raise ValueError(
            f"conv.norm must be None or bn itself to fold bn into conv, got {type(conv.norm).__name__}"
        )

    with torch.no_grad():
        weight = conv.weight.detach().double()
        mean = bn.running_mean.double()
        var = bn.running_var.double()
        gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
        conv_bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
        scale = gamma * (var + bn.eps).rsqrt()
        new_weight = weight * scale.reshape(-1, 1, 1, 1)
        new_bias = (conv_bias - mean) * scale + beta

    kwargs = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    if is_detcore_conv:
        activation = conv.activation
        if isinstance(activation, nn.Module):
            activation = copy.deepcopy(activation)
        fused: nn.Conv2d = Conv2d(**kwargs, norm=None, activation=activation)
    else:
        fused = nn.Conv2d(**kwargs)
    with torch.no_grad():
        fused.weight.copy_(new_weight)
        fused.bias.copy_(new_bias)
    fused.train(conv.training)
    return fused


# ---------------------------------------------------------------------------------------------------------
# NaiveSyncBatchNorm


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _DifferentiableAllReduceSum(torch.autograd.Function):
    """Sum over the default process group; the backward sums the gradients the same way."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _all_reduce_sum(vec: Tensor) -> Tensor:
    """Differentiable all-reduce (sum) over the default process group.

    (Written out because ``torch.distributed.nn.functional.all_reduce`` is deprecated in recent torch.)
    """
    return _DifferentiableAllReduceSum.apply(vec)


def _local_stats(x: Tensor, stats_mode: str) -> Tensor:
    """One worker's contribution to the all-reduced statistics vector.

    Args:
        x (Tensor[N, C, H, W]): this worker's input (float32/float64).
        stats_mode (str): "" or "N".

    Returns:
        Tensor[2C] for stats_mode "": ``[mean, mean of squares]`` over (N, H, W).
        Tensor[2C + 1] for stats_mode "N": ``N * [mean, mean of squares, 1]`` (zeros when N == 0, still
        connected to ``x`` so that backward reaches every worker's input).
    """
    batch, channels = x.shape[0], x.shape[1]
    if stats_mode == "":
        if batch == 0:
            raise ValueError(
                'NaiveSyncBatchNorm(stats_mode="") does not support inputs with zero batch size; '
                'use stats_mode="N"'
            )
        mean = x.mean(dim=[0, 2, 3])
        meansqr = (x * x).mean(dim=[0, 2, 3])
        return torch.cat([mean, meansqr], dim=0)
    if batch == 0:
        return torch.zeros(2 * channels + 1, device=x.device, dtype=x.dtype) + x.sum()
    mean = x.mean(dim=[0, 2, 3])
    meansqr = (x * x).mean(dim=[0, 2, 3])
    one = torch.ones(1, device=x.device, dtype=x.dtype)
    return torch.cat([mean, meansqr, one], dim=0) * batch


def _global_stats(
    reduced: Tensor, num_channels: int, world_size: int, stats_mode: str
) -> tuple[Tensor, Tensor, Tensor | float]:
    """Turn the all-reduced (summed) vector into global statistics.

    Args:
        reduced (Tensor[2C] | Tensor[2C + 1]): sum over workers of :func:`_local_stats`.
        num_channels (int): C.
        world_size (int): number of workers.
        stats_mode (str): "" (each worker weighted equally) or "N" (workers weighted by their batch size).

    Returns:
        (mean [C], biased variance [C], momentum_scale): ``momentum_scale`` multiplies the running-stats
        momentum; it is 0 when the total batch over all workers is empty (no update), else 1.
    """
    if stats_mode == "":
        mean, meansqr = torch.split(reduced * (1.0 / world_size), num_channels)
        momentum_scale: Tensor | float = 1.0
    else:
        total_batch = reduced[-1].detach()
        momentum_scale = total_batch.clamp(max=1)
        mean, meansqr, _ = torch.split(reduced / total_batch.clamp(min=1), num_channels)
    var = meansqr - mean * mean
    return mean, var, momentum_scale


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """Synchronized BatchNorm2d that all-reduces per-worker moments (detectron2's ``NaiveSyncBatchNorm``).

    When not in a distributed run, with a world size of 1, or in eval mode, this is exactly
    ``torch.nn.BatchNorm2d``. In distributed training, each worker computes the per-channel mean and mean of
    squares of its input, these are all-reduced (differentiably, so gradients flow to every worker's
    input), and the input is normalized with the global mean and (biased) variance.

    Note:
        There is no single definition of sync batch norm.

        With ``stats_mode=""`` the global statistics average every worker's statistics with equal weight.
        They equal the statistics of all samples (as if on one worker) only when all workers have the same
        (N, H, W). Zero batch size is not supported in this mode.

        With ``stats_mode="N"`` every worker's statistics are weighted by its batch size N. They equal the
        statistics of all samples only when all workers have the same (H, W). Workers may have N == 0;
        when the total batch is empty the running statistics are not updated.

        Running statistics are updated with the biased global variance (as detectron2 does), with
        ``momentum`` (or the cumulative average when ``momentum=None``).

    Args:
        *args: as ``torch.nn.BatchNorm2d`` (num_features, eps, momentum, affine, track_running_stats).
        stats_mode (str): "" or "N", see the note.
        **kwargs: as ``torch.nn.BatchNorm2d``.
    """

    def __init__(self, *args, stats_mode: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if stats_mode not in ("", "N"):
            raise ValueError(f'stats_mode must be "" or "N", got {stats_mode!r}')
        self._stats_mode = stats_mode

    def forward(self, input: Tensor) -> Tensor:
        world_size = _world_size()
        if world_size == 1 or not self.training:
            return super().forward(input)
        self._check_input_dim(input)

        half_input = input.dtype in (torch.float16, torch.bfloat16)
        x = input.float() if half_input else input  # half precision is too coarse for the moments
        channels = x.shape[1]
        vec = _all_reduce_sum(_local_stats(x, self._stats_mode))
        mean, var, momentum_scale = _global_stats(vec, channels, world_size, self._stats_mode)

        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            factor = momentum_scale * factor
            with torch.no_grad():
                self.running_mean += factor * (mean.detach() - self.running_mean)
                self.running_var += factor * (var.detach() - self.running_var)

        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = self.weight * scale
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out = x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        return out.to(input.dtype) if half_input else out


# ---------------------------------------------------------------------------------------------------------
# LayerNorm and get_norm


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension of NCHW inputs (ConvNeXt style, detectron2's ``LayerNorm``).

    Each spatial position is normalized by the mean and (biased) variance of its C channel values, then
    scaled and shifted per channel.

    Args:
        normalized_shape (int): number of channels C.
        eps (float): added to the variance.

    Shape:
        x (Tensor[N, C, H, W]) -> Tensor[N, C, H, W].
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}"


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


def _naive_sync_bn_n(channels: int) -> nn.Module:
    return NaiveSyncBatchNorm(channels, stats_mode="N")


_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "NaiveSyncBN": NaiveSyncBatchNorm,
    "NaiveSyncBN_N": _naive_sync_bn_n,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
    "LN": LayerNorm,
    # detectron2's spellings, accepted so that detectron2 configs work unchanged
    "nnSyncBN": nn.SyncBatchNorm,
    "naiveSyncBN": NaiveSyncBatchNorm,
    "naiveSyncBN_N": _naive_sync_bn_n,
}


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """Build a normalization layer by name.

    Args:
        norm (str | Callable[[int], nn.Module] | None): None or "" for no normalization; one of
            "BN" (``nn.BatchNorm2d``), "SyncBN" (``nn.SyncBatchNorm``), "NaiveSyncBN"
            (:class:`NaiveSyncBatchNorm`), "NaiveSyncBN_N" (the same with ``stats_mode="N"``), "FrozenBN"
            (:class:`FrozenBatchNorm2d`), "GN" (``nn.GroupNorm`` with 32 groups), "LN" (:class:`LayerNorm`
            over channels); detectron2's spellings "nnSyncBN", "naiveSyncBN" and "naiveSyncBN_N" are
            accepted too. Or a callable taking the channel count and returning a module.
        out_channels (int): number of channels to normalize.

    Returns:
        nn.Module | None: the normalization layer, or None.

    Raises:
        ValueError: unknown name (the message lists the valid names).
        TypeError: ``norm`` is neither a string, None nor a callable.
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if norm == "":
            return None
        if norm not in _NORMS:
            valid = ", ".join(repr(n) for n in ["", *_NORMS])
            raise ValueError(f"norm must be one of {valid} or a callable, got {norm!r}")
        return _NORMS[norm](out_channels)
    if not callable(norm):
        raise TypeError(f"norm must be a string, None or a callable(out_channels) -> nn.Module, got {norm!r}")
    return norm(out_channels)
