"""``build_model``: a model from its config, every component resolved by name through ``detcore.plugins``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detcore.archs.config import Config, ModelConfig
from detcore.heads.build import build_component

__all__ = ["build_model"]


def build_model(cfg: Config | ModelConfig, device: str | torch.device | None = None) -> nn.Module:
    """Build the model of ``cfg`` (weights are not loaded: use :func:`~detcore.archs.load_checkpoint`).

    Args:
        cfg: a :class:`Config` (its ``model``) or a :class:`ModelConfig`.
        device: build directly on this device (e.g. "meta" to only inspect names and shapes).

    Returns:
        nn.Module: the meta-architecture registered as ``cfg.model.meta_architecture`` (kind "meta_arch").
    """
    model_cfg: Any = cfg.model if isinstance(cfg, Config) else cfg
    if not isinstance(model_cfg, ModelConfig):
        raise TypeError(f"cfg must be a Config or ModelConfig, got {type(cfg).__name__}")
    if device is None:
        return build_component("meta_arch", model_cfg.meta_architecture, model_cfg, None)
    with torch.device(device):
        return build_component("meta_arch", model_cfg.meta_architecture, model_cfg, None)
