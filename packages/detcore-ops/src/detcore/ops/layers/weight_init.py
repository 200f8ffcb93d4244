"""Caffe2-style weight initialisations used by detectron2 (``fvcore.nn.weight_init``)."""

from __future__ import annotations

from torch import nn

__all__ = ["c2_msra_fill", "c2_xavier_fill"]


def c2_msra_fill(module: nn.Module) -> None:
    """Caffe2 "MSRAFill": Kaiming-normal weight (fan_out, ReLU gain), zero bias. In place.

    Args:
        module (nn.Module): a module with a ``weight`` parameter and optionally a ``bias`` (may be None).
    """
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 "XavierFill": uniform in ``[-sqrt(3 / fan_in), sqrt(3 / fan_in)]``, zero bias. In place.

    (This is ``kaiming_uniform_(a=1)``; Caffe2's XavierFill uses fan_in only, unlike
    ``nn.init.xavier_uniform_``.)

    Args:
        module (nn.Module): a module with a ``weight`` parameter and optionally a ``bias`` (may be None).
    """
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)
