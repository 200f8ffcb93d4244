"""Helpers shared by the component config dataclasses and builders (private)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["as_nested_tuple", "as_tuple", "broadcast_params"]


def as_tuple(value: Any, name: str) -> tuple:
    """``value`` (a sequence) as a tuple; raises TypeError naming ``name`` otherwise."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple, got {type(value).__name__}")
    return tuple(value)


def as_nested_tuple(value: Any, name: str) -> tuple:
    """A list of numbers or a list of lists of numbers as (nested) tuples, for frozen configs."""
    outer = as_tuple(value, name)
    return tuple(as_tuple(v, f"{name}[{i}]") if isinstance(v, Sequence) else v for i, v in enumerate(outer))


def broadcast_params(params: Any, num_features: int, name: str) -> list[list[Any]]:
    """detectron2's ``_broadcast_params``: per-level parameter lists.

    ``params`` is either a flat list (used for every level), a list with one list (idem), or one list per
    level (``num_features`` of them).
    """
    params = as_tuple(params, name)
    if len(params) == 0:
        raise ValueError(f"{name} must not be empty")
    if not isinstance(params[0], Sequence):
        return [list(params)] * num_features
    if len(params) == 1:
        return [list(params[0])] * num_features
    if len(params) != num_features:
        raise ValueError(
            f"{name} must have one list per feature level ({num_features}), or a single list, "
            f"got {len(params)} lists"
        )
    return [list(as_tuple(p, f"{name}[{i}]")) for i, p in enumerate(params)]
