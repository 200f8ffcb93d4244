"""Training loops (detectron2's ``TrainerBase``, ``SimpleTrainer``, ``AMPTrainer``, ``HookBase``).

The model is called as ``loss_dict = model(batch)`` and must return a dict of scalar loss tensors; their
sum is back-propagated. A non-finite loss raises ``FloatingPointError`` before the backward pass, so the
parameters, the optimizer and the checkpoints stay those of the last good iteration.

With ``torch.distributed`` initialized and a world size > 1, :class:`SimpleTrainer` wraps the model in
``DistributedDataParallel`` (gradients are averaged over ranks).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detcore.engine.launch import get_world_size
from detcore.engine.train.events import EventStorage

__all__ = ["AMPTrainer", "HookBase", "SimpleTrainer", "TrainerBase", "create_ddp_model"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of trainer hooks; ``self.trainer`` is set (a weak proxy) by ``register_hooks``."""

    trainer: TrainerBase

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}


class TrainerBase:
    """A loop over iterations ``start_iter .. max_iter - 1`` calling hooks around :meth:`run_step`.

    Attributes:
        iter: the current iteration (``max_iter`` after a completed run; the failing iteration otherwise).
        start_iter, max_iter: the bounds given to :meth:`train`.
        storage: the :class:`EventStorage` of the current run.
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage | None = None
        self.completed = False

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Append hooks (None entries are ignored); they run in registration order."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"register_hooks: expected HookBase instances, got {type(h).__name__}")
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter`` to ``max_iter - 1``; exceptions propagate after ``after_train``."""
        if not 0 <= start_iter <= max_iter:
            raise ValueError(f"train: need 0 <= start_iter <= max_iter, got {start_iter}, {max_iter}")
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = int(start_iter)
        self.max_iter = int(max_iter)
        self.completed = False
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                self.iter = max_iter
                self.completed = True
            except Exception:
                logger.exception("Exception during training at iteration %d:", self.iter)
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError


def create_ddp_model(model: nn.Module, *, find_unused_parameters: bool = False, **kwargs) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when the world size is > 1 (else return it).

    On CUDA the model's device is used as ``device_ids``; other ``kwargs`` go to ``DistributedDataParallel``
    (its own defaults otherwise).
    """
    if get_world_size() <= 1 or isinstance(model, DistributedDataParallel):
        return model
    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [p.device.index]
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **kwargs)


def _check_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    bad = [k for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all()]
    flag = torch.tensor([1.0 if bad else 0.0])
    if get_world_size() > 1:
        # every rank must raise together, or the others would block in the gradient all-reduce
        dev = next(iter(loss_dict.values())).device
        flag = flag.to(dev)
        torch.distributed.all_reduce(flag)
    if flag.item() > 0:
        values = {k: float(v.detach().float().sum()) for k, v in loss_dict.items()}
        names = ", ".join(bad) if bad else "(on another rank)"
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration={iteration}! non-finite losses: {names}; "
            f"loss_dict = {values}"
        )


class SimpleTrainer(TrainerBase):
    """``batch = next(data)``; ``loss_dict = model(batch)``; ``sum(loss_dict).backward()``; ``step``.

    Args:
        model: returns a dict of scalar losses in training mode (set to ``train()`` here).
        data_loader: an iterable of batches (iterated lazily, once, as an infinite stream; creating the
            iterator leaves the global torch RNG state unchanged).
        optimizer: gradient clipping is applied by the optimizer (see ``maybe_add_gradient_clipping``).
        zero_grad_before_forward: zero the gradients before the forward (else after it).
        find_unused_parameters: passed to ``DistributedDataParallel`` when wrapping.
        wrap_ddp: wrap the model in DDP when the world size is > 1.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        zero_grad_before_forward: bool = False,
        find_unused_parameters: bool = False,
        wrap_ddp: bool = True,
    ):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"SimpleTrainer: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"SimpleTrainer: optimizer must be a torch Optimizer, got {type(optimizer).__name__}"
            )
        model.train()
        if wrap_ddp:
            model = create_ddp_model(model, find_unused_parameters=find_unused_parameters)
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.zero_grad_before_forward = zero_grad_before_forward

    @property
    def _data_loader_iter(self):
        if self._data_loader_iter_obj is None:
            # torch's DataLoader draws its base seed from the global torch RNG when iterated; restore the
            # state so that starting the stream (at iteration 0 or on resume) does not shift the training RNG
            state = torch.get_rng_state()
            try:
                self._data_loader_iter_obj = iter(self.data_loader)
            finally:
                torch.set_rng_state(state)
        return self._data_loader_iter_obj

    def _next_batch(self):
        start = time.perf_counter()
        batch = next(self._data_loader_iter)
        return batch, time.perf_counter() - start

    def _compute_losses(self, batch) -> dict[str, torch.Tensor]:
        loss_dict = self.model(batch)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError("SimpleTrainer: model(batch) must return a non-empty dict of scalar loss tensors")
        return dict(loss_dict)

    def _record(self, loss_dict: Mapping[str, torch.Tensor], losses: torch.Tensor, data_time: float) -> None:
        storage = self.storage
        storage.put_scalar("data_time", data_time)
        storage.put_scalar("total_loss", losses.detach())
        if len(loss_dict) > 1 or "total_loss" not in loss_dict:
            for k, v in loss_dict.items():
                storage.put_scalar(k, v.detach())

    def run_step(self) -> None:
        batch, data_time = self._next_batch()
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        loss_dict = self._compute_losses(batch)
        _check_finite(loss_dict, self.iter)
        losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self._record(loss_dict, losses, data_time)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"iteration": self.iter}


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with ``torch.autocast`` on the model's device type.

    Args:
        precision: "bf16" (CPU or CUDA) or "fp16" (CUDA only; a ``GradScaler`` is used).
        grad_scaler: the scaler for fp16 (default ``torch.amp.GradScaler("cuda")``).
        Other arguments as :class:`SimpleTrainer`.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        precision: str = "fp16",
        grad_scaler: torch.amp.GradScaler | None = None,
        **kwargs,
    ):
        if precision not in ("fp16", "bf16"):
            raise ValueError(f"AMPTrainer: precision must be 'fp16' or 'bf16', got {precision!r}")
        p = next(model.parameters(), None)
        self.device_type = p.device.type if p is not None else "cpu"
        if precision == "fp16" and self.device_type != "cuda":
            raise ValueError(
                f"AMPTrainer: precision='fp16' needs a CUDA model (got device type {self.device_type!r}); "
                "use precision='bf16' on CPU"
            )
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        if precision == "fp16" and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler("cuda")
        self.grad_scaler = grad_scaler

    def run_step(self) -> None:
        batch, data_time = self._next_batch()
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            loss_dict = self._compute_losses(batch)
            losses = sum(loss_dict.values())
        _check_finite(loss_dict, self.iter)
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self._record(loss_dict, losses, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)  # so that gradient clipping sees true gradients
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self.optimizer.step()

    def state_dict(self) -> dict:
        out = super().state_dict()
        if self.grad_scaler is not None:
            out["grad_scaler"] = self.grad_scaler.state_dict()
        return out
