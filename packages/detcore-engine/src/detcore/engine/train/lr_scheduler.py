"""Learning-rate schedules (detectron2's ``WarmupParamScheduler`` + ``MultiStepParamScheduler`` /
``CosineParamScheduler`` driven by ``LRMultiplier``).

At iteration ``i`` (0-based; the scheduler is stepped once after every optimizer step) the learning rate of
each parameter group is ``initial_lr * multiplier(i)`` with

- multi-step: ``gamma ** bisect_right(steps, i)``;
- cosine: ``end + 0.5 * (1 - end) * (1 + cos(pi * i / max_iter))``;
- warm-up (``i < warmup_iters``): linear from ``warmup_factor * m(0)`` to ``m(warmup_iters)``, i.e.
  ``alpha = i / warmup_iters``, ``m(warmup_iters) * alpha + warmup_factor * m(0) * (1 - alpha)``;
  constant: ``warmup_factor * m(0)``.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["LRMultiplier", "WarmupMultiplier", "build_lr_scheduler"]


class WarmupMultiplier:
    """The LR multiplier as a picklable function of the iteration (see the module docstring).

    Args:
        name: "WarmupMultiStepLR" or "WarmupCosineLR".
        max_iter: total iterations (> 0).
        steps: multi-step milestones (those > max_iter are dropped).
        gamma: multi-step decay factor.
        end_value: the cosine schedule's final multiplier.
        warmup_iters: warm-up length (0: none).
        warmup_factor: multiplier at iteration 0 relative to the schedule.
        warmup_method: "linear" or "constant".
    """

    def __init__(
        self,
        name: str,
        max_iter: int,
        *,
        steps: tuple[int, ...] = (),
        gamma: float = 0.1,
        end_value: float = 0.0,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        warmup_method: str = "linear",
    ):
        if name not in ("WarmupMultiStepLR", "WarmupCosineLR"):
            raise ValueError(
                f"lr scheduler name must be 'WarmupMultiStepLR' or 'WarmupCosineLR', got {name!r}"
            )
        if not isinstance(max_iter, int) or max_iter <= 0:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"warmup_method must be 'linear' or 'constant', got {warmup_method!r}")
        if warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
        if list(steps) != sorted(steps):
            raise ValueError(f"steps must be increasing, got {steps}")
        self.name = name
        self.max_iter = max_iter
        self.steps = [int(s) for s in steps if s <= max_iter]
        self.gamma = float(gamma)
        self.end_value = float(end_value)
        self.warmup_iters = min(int(warmup_iters), max_iter)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method

    def _main(self, it: float) -> float:
        if self.name == "WarmupMultiStepLR":
            return self.gamma ** bisect.bisect_right(self.steps, it)
        where = it / self.max_iter
        return self.end_value + 0.5 * (1.0 - self.end_value) * (1.0 + math.cos(math.pi * where))

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            start = self.warmup_factor * self._main(0)
            if self.warmup_method == "constant":
                return start
            alpha = it / self.warmup_iters
            return self._main(self.warmup_iters) * alpha + start * (1.0 - alpha)
        return self._main(it)


class LRMultiplier(LRScheduler):
    """``lr = initial_lr * multiplier(last_epoch)`` per group; ``last_epoch`` counts ``step()`` calls."""

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier, last_epoch: int = -1):
        if not callable(multiplier):
            raise TypeError("LRMultiplier: multiplier must be callable")
        self._multiplier = multiplier
        super().__init__(optimizer, last_epoch=last_epoch)

    def state_dict(self) -> dict:
        # the multiplier is configuration, rebuilt by the caller; only the counters are state
        state = {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}
        if hasattr(self, "_last_lr"):
            state["_last_lr"] = self._last_lr
        return state

    def get_lr(self) -> list[float]:
        m = self._multiplier(self.last_epoch)
        return [base_lr * m for base_lr in self.base_lrs]


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "WarmupMultiStepLR",
    max_iter: int = 40000,
    *,
    steps: tuple[int, ...] = (30000,),
    gamma: float = 0.1,
    base_lr_end: float = 0.0,
    warmup_iters: int = 1000,
    warmup_factor: float = 0.001,
    warmup_method: str = "linear",
    base_lr: float | None = None,
) -> LRMultiplier:
    """detectron2's ``build_lr_scheduler``: ``base_lr_end`` is the cosine schedule's final LR (absolute; the
    multiplier ends at ``base_lr_end / base_lr``, ``base_lr`` defaulting to the first group's initial LR)."""
    if base_lr is None:
        base_lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    if not base_lr > 0:
        raise ValueError(f"build_lr_scheduler: base_lr must be > 0, got {base_lr}")
    mult = WarmupMultiplier(
        name,
        max_iter,
        steps=tuple(steps),
        gamma=gamma,
        end_value=base_lr_end / base_lr,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
        warmup_method=warmup_method,
    )
    return LRMultiplier(optimizer, mult)
