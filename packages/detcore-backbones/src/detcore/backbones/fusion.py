"""Inference-time folding of FrozenBatchNorm2d into the preceding convolution."""

from __future__ import annotations

import torch
from torch import nn

from detcore.ops import FrozenBatchNorm2d

__all__ = ["fuse_frozen_batchnorm"]


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
    # y = ((W * x + b) - mean) * w / sqrt(var + eps) + beta  ==  (W * s) * x + (b - mean) * s + beta
    scale = bn.weight.double() * (bn.running_var.double() + bn.eps).rsqrt()
    shift = bn.bias.double() - bn.running_mean.double() * scale
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def fuse_frozen_batchnorm(module: nn.Module, channels_last: bool = False) -> nn.Module:
    """Fold every FrozenBatchNorm2d that is the ``norm`` of a detcore ``Conv2d`` into that conv, in place.

    The conv's weight is scaled per output channel by ``weight / sqrt(running_var + eps)`` and its bias
    becomes the norm's shift (plus the scaled old bias); the norm is replaced with ``nn.Identity``. Other
    norms (BatchNorm in training, GroupNorm, ...) and norms of non-conv layers (e.g. deformable convs) are
    left untouched. The outputs equal the unfused module's within float rounding. The result is meant for
    inference: the folded parameters no longer correspond to a checkpoint's names.

    Args:
        module: a module (e.g. a Backbone); modified in place.
        channels_last: also convert 4-D parameters and buffers to ``torch.channels_last`` memory format; a
            conv with channels-last weights produces channels-last outputs, which later layers keep.

    Returns:
        nn.Module: ``module`` itself.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for sub in module.modules():
        norm = getattr(sub, "norm", None)
        if isinstance(sub, nn.Conv2d) and isinstance(norm, FrozenBatchNorm2d):
            _fold(sub, norm)
            sub.norm = nn.Identity()
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module
