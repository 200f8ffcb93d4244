"""Thin wrappers around torch.nn layers and functions, with detectron2's ``layers.wrappers`` API.

``Conv2d`` adds optional ``norm`` and ``activation`` to ``torch.nn.Conv2d``. The others are the torch
objects themselves, kept under detectron2's names for API parity (current torch handles empty inputs in
convolutions, linear layers and interpolation, which is what detectron2's wrappers once added).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "cat",
    "interpolate",
    "nonzero_tuple",
]

#: ``torch.nn.ConvTranspose2d`` (detectron2 API parity).
ConvTranspose2d = nn.ConvTranspose2d
#: ``torch.nn.BatchNorm2d`` (detectron2 API parity).
BatchNorm2d = nn.BatchNorm2d
#: ``torch.nn.Linear`` (detectron2 API parity; empty inputs are supported by torch itself).
Linear = nn.Linear
#: ``torch.nn.functional.interpolate`` (detectron2 API parity; zero-size inputs are supported by torch).
interpolate = F.interpolate


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` followed by an optional normalization layer and an optional activation.

    ``forward`` computes ``activation(norm(conv(x)))``, skipping whichever of ``norm`` and ``activation``
    is None. Empty batches are supported: an input of shape [0, C, H, W] gives an output of shape
    [0, C_out, H_out, W_out].

    Args:
        *args: positional arguments of ``torch.nn.Conv2d`` (in_channels, out_channels, kernel_size, ...).
        norm (nn.Module | None): normalization layer applied after the convolution, e.g. from
            :func:`detcore.ops.get_norm`. Registered as the submodule ``norm``, so its parameters are
            named ``<prefix>.norm.weight`` etc., as in detectron2 checkpoints.
        activation (Callable[[Tensor], Tensor] | None): applied after ``norm``, e.g. ``F.relu``.
        **kwargs: keyword arguments of ``torch.nn.Conv2d`` (stride, padding, dilation, groups, bias, ...).

    Raises:
        TypeError: ``norm`` is not a module (e.g. a name: use ``get_norm``) or ``activation`` is not callable.
        ValueError: in training mode, on an empty input when ``norm`` is ``torch.nn.SyncBatchNorm`` (which
            cannot compute statistics of an empty batch; detectron2 asserts the same).
    """

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
        **kwargs,
    ) -> None:
        if norm is not None and not isinstance(norm, nn.Module):
            raise TypeError(
                f"norm must be an nn.Module or None (build one with get_norm(name, channels)), got {norm!r}"
            )
        if activation is not None and not callable(activation):
            raise TypeError(f"activation must be a callable or None, got {activation!r}")
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        # Checked in this order so the shape is only inspected when the check can matter
        # (keeps dynamic batch sizes symbolic under torch.export / torch.compile otherwise).
        if self.training and isinstance(self.norm, nn.SyncBatchNorm) and x.numel() == 0:
            raise ValueError(
                f"Conv2d: SyncBatchNorm does not support empty inputs in training mode, got input of shape "
                f"{list(x.shape)}; use norm='NaiveSyncBN_N' or call .eval()"
            )
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat`` that returns the tensor itself, without a copy, when there is only one.

    Args:
        tensors (list[Tensor] | tuple[Tensor]): non-empty sequence of tensors, equal shapes except in ``dim``.
        dim (int): dimension to concatenate along.

    Returns:
        Tensor: the concatenation; ``tensors[0]`` itself (not a copy) when ``len(tensors) == 1``.
    """
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    if len(tensors) == 0:
        raise ValueError("tensors must be a non-empty list or tuple of tensors, got an empty one")
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def nonzero_tuple(x: Tensor) -> tuple[Tensor, ...]:
    """``torch.nonzero(x, as_tuple=True)`` written with ``nonzero().unbind(1)`` (TorchScript-friendly).

    Args:
        x (Tensor[...]): any tensor; a 0-dim tensor is treated as a 1-element vector, as torch does.

    Returns:
        tuple[Tensor[K], ...]: one int64 index tensor per dimension of ``x`` (one for a 0-dim ``x``).
    """
    if x.dim() == 0:
        x = x.unsqueeze(0)
    return x.nonzero().unbind(1)
