"""Argument checks shared by the op wrappers: errors name the argument and the expected form."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["FLOAT_DTYPES", "check_floating", "check_same_device", "check_shape", "check_tensor"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {t.dtype}")


def check_shape(name: str, t: torch.Tensor, shape: Sequence[int | None], desc: str) -> None:
    """``shape`` uses None for any size; ``desc`` is the human form, e.g. "[N, 4]"."""
    if t.dim() != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{name} must have shape {desc}, got {list(t.shape)}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listing}")
