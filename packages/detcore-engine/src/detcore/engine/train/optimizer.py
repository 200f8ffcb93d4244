"""Optimizer construction (detectron2's ``build_optimizer`` / ``get_default_optimizer_params`` /
``maybe_add_gradient_clipping``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from detcore.ops import FrozenBatchNorm2d, LayerNorm

__all__ = [
    "NORM_MODULE_TYPES",
    "GradientClipConfig",
    "build_optimizer",
    "build_optimizer_from_config",
    "clip_gradients",
    "get_default_optimizer_params",
    "maybe_add_gradient_clipping",
]

NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    FrozenBatchNorm2d,
    LayerNorm,
)
"""Module types whose parameters get ``weight_decay_norm`` (NaiveSyncBatchNorm is a BatchNorm2d)."""


@dataclass(frozen=True)
class GradientClipConfig:
    """Gradient clipping (detectron2's ``SOLVER.CLIP_GRADIENTS``).

    Attributes:
        clip_type: "value" (clamp each gradient element to ``[-clip_value, clip_value]``), "norm" (clip the
            gradient norm of each parameter group) or "full_model" (clip the norm of all gradients together).
        clip_value: the threshold (> 0).
        norm_type: p of the p-norm for "norm" / "full_model" (``inf`` allowed).
    """

    clip_type: str = "value"
    clip_value: float = 1.0
    norm_type: float = 2.0

    def __post_init__(self):
        if self.clip_type not in ("value", "norm", "full_model"):
            raise ValueError(
                f"GradientClipConfig: clip_type must be 'value', 'norm' or 'full_model', got {self.clip_type!r}"
            )
        if not self.clip_value > 0:
            raise ValueError(f"GradientClipConfig: clip_value must be > 0, got {self.clip_value}")


def clip_gradients(optimizer: torch.optim.Optimizer, cfg: GradientClipConfig) -> None:
    """Clip the gradients of ``optimizer``'s parameters in place according to ``cfg``."""
    groups = [[p for p in g["params"] if p.grad is not None] for g in optimizer.param_groups]
    if cfg.clip_type == "value":
        for params in groups:
            if params:
                torch.nn.utils.clip_grad_value_(params, cfg.clip_value)
    elif cfg.clip_type == "norm":
        for params in groups:
            if params:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip_value, cfg.norm_type)
    else:
        params = [p for ps in groups for p in ps]
        if params:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_value, cfg.norm_type)


def maybe_add_gradient_clipping(
    optimizer: torch.optim.Optimizer, clip: GradientClipConfig | None
) -> torch.optim.Optimizer:
    """Return ``optimizer`` with its ``step`` clipping gradients first (the instance's class is swapped for
    a subclass, as detectron2 does); unchanged when ``clip`` is None."""
    if clip is None:
        return optimizer
    if not isinstance(clip, GradientClipConfig):
        raise TypeError(f"clip must be a GradientClipConfig or None, got {type(clip).__name__}")
    base = type(optimizer)
    if getattr(base, "_detcore_clip", None) is not None:
        raise ValueError("maybe_add_gradient_clipping: optimizer already clips gradients")

    def step(self, closure=None):
        clip_gradients(self, clip)
        return base.step(self, closure)

    optimizer.__class__ = type(
        base.__name__ + "WithGradientClip", (base,), {"step": step, "_detcore_clip": clip}
    )
    return optimizer


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    bias_lr_factor: float | None = 1.0,
    weight_decay_bias: float | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
) -> list[dict]:
    """Parameter groups with per-parameter hyper-parameters (detectron2 semantics).

    Each trainable parameter appears once (shared parameters are deduplicated). Parameters of a module in
    :data:`NORM_MODULE_TYPES` get ``weight_decay_norm`` (if not None); a parameter named ``bias`` then gets
    ``lr = base_lr * bias_lr_factor`` (if the factor != 1) and ``weight_decay_bias`` (if not None);
    ``overrides`` maps a parameter name (e.g. "embedding") to hyper-parameters. Parameters with identical
    hyper-parameters are merged into one group (order of first appearance).

    Returns:
        list of ``{"params": [Parameter, ...], "lr"?: float, "weight_decay"?: float}``.
    """
    overrides = dict(overrides or {})
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("get_default_optimizer_params: bias_lr_factor requires base_lr")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError("get_default_optimizer_params: conflicting overrides for 'bias'")
        overrides["bias"] = bias_overrides

    groups: dict[tuple, dict] = {}
    memo: set[int] = set()
    for module in model.modules():
        for pname, value in module.named_parameters(recurse=False):
            if not value.requires_grad or id(value) in memo:
                continue
            memo.add(id(value))
            hyper = copy.copy(defaults)
            if isinstance(module, NORM_MODULE_TYPES) and weight_decay_norm is not None:
                hyper["weight_decay"] = weight_decay_norm
            hyper.update(overrides.get(pname, {}))
            key = tuple(sorted(hyper.items()))
            groups.setdefault(key, {"params": [], **hyper})["params"].append(value)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    name: str = "SGD",
    base_lr: float = 0.02,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: float | None = None,
    bias_lr_factor: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    clip_gradients: GradientClipConfig | None = None,
) -> torch.optim.Optimizer:
    """Build "SGD" or "AdamW" over :func:`get_default_optimizer_params` groups.

    ``weight_decay_bias=None`` means biases use ``weight_decay`` (norm biases use ``weight_decay_norm``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_optimizer: model must be an nn.Module, got {type(model).__name__}")
    if not base_lr > 0:
        raise ValueError(f"build_optimizer: base_lr must be > 0, got {base_lr}")
    params = get_default_optimizer_params(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        bias_lr_factor=bias_lr_factor,
        weight_decay_bias=weight_decay_bias,
    )
    if not params:
        raise ValueError("build_optimizer: model has no trainable parameters")
    if name == "SGD":
        opt = torch.optim.SGD(params, lr=base_lr, momentum=momentum, nesterov=nesterov)
    elif name == "AdamW":
        opt = torch.optim.AdamW(params, lr=base_lr, betas=betas)
    else:
        raise ValueError(f"build_optimizer: name must be 'SGD' or 'AdamW', got {name!r}")
    return maybe_add_gradient_clipping(opt, clip_gradients)


def build_optimizer_from_config(model: nn.Module, solver) -> torch.optim.Optimizer:
    """:func:`build_optimizer` with every setting (and gradient clipping) from a detcore ``cfg.solver``
    (:class:`~detcore.archs.SolverConfig`), as ``detcore train`` builds it."""
    clip = solver.clip_gradients
    return build_optimizer(
        model,
        solver.optimizer,
        solver.base_lr,
        momentum=solver.momentum,
        nesterov=solver.nesterov,
        weight_decay=solver.weight_decay,
        weight_decay_norm=solver.weight_decay_norm,
        weight_decay_bias=solver.weight_decay_bias,
        bias_lr_factor=solver.bias_lr_factor,
        clip_gradients=GradientClipConfig(clip.clip_type, clip.clip_value, clip.norm_type)
        if clip.enabled
        else None,
    )
