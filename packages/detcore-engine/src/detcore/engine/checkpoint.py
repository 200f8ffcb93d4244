"""Training checkpoints: model, optimizer, scheduler, iteration, sampler and RNG states, saved atomically.

A checkpoint is a ``torch.save`` of ``{"model", "optimizer"?, "scheduler"?, "iteration", "sampler_state"?,
"rng_states", "extra", <name>: state for each extra checkpointable}``, written to a temporary file in the
save directory then moved into place with ``os.replace``; ``DIR/last_checkpoint`` (the file name of the
newest checkpoint) is updated the same way, after the checkpoint itself, so it always names a complete file.

Resuming (``resume_or_load(path, resume=True)``) restores every state, including the sampler position and
the Python / NumPy / torch (CPU and CUDA) RNG states, so that a run killed after checkpoint ``k`` and resumed
from iteration ``k + 1`` reproduces the uninterrupted run exactly (CPU, deterministic ops, loader without
workers). In multi-process runs only the main process writes, and the RNG states saved are its own.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detcore.engine.launch import is_main_process

__all__ = ["Checkpointer", "get_rng_states", "set_rng_states"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def get_rng_states() -> dict[str, Any]:
    """Python ``random``, NumPy and torch (CPU, and every CUDA device if initialized) RNG states."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore states from :func:`get_rng_states` (the CUDA ones only where CUDA is available)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda_states = states["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("Not restoring CUDA RNG states: saved for a different number of devices")


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class Checkpointer:
    """Save and restore the full training state.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        save_dir: directory of the checkpoints (created on save).
        optimizer, scheduler: optional; anything with ``state_dict`` / ``load_state_dict``.
        sampler: optional training sampler (e.g. ``TrainingSampler``) whose position is saved as
            ``sampler_state``; load it before the data loader is first iterated.
        save_to_disk: write files (default: only on the main process).
        **checkpointables: further objects with ``state_dict`` / ``load_state_dict`` (e.g. a GradScaler).
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str | os.PathLike = "",
        *,
        optimizer=None,
        scheduler=None,
        sampler=None,
        save_to_disk: bool | None = None,
        **checkpointables,
    ):
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, nn.Module):
            raise TypeError(f"Checkpointer: model must be an nn.Module, got {type(model).__name__}")
        for name, obj in {
            "optimizer": optimizer,
            "scheduler": scheduler,
            "sampler": sampler,
            **checkpointables,
        }.items():
            if obj is not None and not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"Checkpointer: {name} must have state_dict() and load_state_dict()")
        reserved = {"model", "optimizer", "scheduler", "iteration", "sampler_state", "rng_states", "extra"}
        if reserved & set(checkpointables):
            raise ValueError(
                f"Checkpointer: checkpointable names {sorted(reserved & set(checkpointables))} are reserved"
            )
        self.model = model
        self.save_dir = os.fspath(save_dir)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.sampler = sampler
        self.checkpointables = checkpointables
        self.save_to_disk = is_main_process() if save_to_disk is None else save_to_disk

    # ---- saving ----
    def save(self, name: str, iteration: int | None = None, **extra) -> str | None:
        """Write ``save_dir/name.pth`` atomically and point ``last_checkpoint`` to it.

        Args:
            name: file stem, e.g. "model_0000999" or "model_final".
            iteration: the last completed iteration (resume starts at ``iteration + 1``).
            **extra: picklable data stored under "extra".

        Returns:
            The path written (None when this process does not save).
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        data: dict[str, Any] = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        if self.sampler is not None:
            data["sampler_state"] = self.sampler.state_dict()
        for k, obj in self.checkpointables.items():
            data[k] = obj.state_dict()
        data["iteration"] = iteration
        data["rng_states"] = get_rng_states()
        data["extra"] = extra
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        logger.info("Saving checkpoint to %s", path)
        _atomic_write(path, lambda f: torch.save(data, f))
        _atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda f: f.write(basename.encode()))
        return path

    # ---- loading ----
    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and os.path.isfile(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def get_checkpoint_file(self) -> str:
        """Path of the checkpoint named by ``last_checkpoint`` ("" if none)."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT)) as f:
                last = f.read().strip()
        except OSError:
            return ""
        return os.path.join(self.save_dir, last)

    def load(self, path: str, *, model_only: bool = False) -> dict[str, Any]:
        """Load ``path``: the model always; with ``model_only=False`` also the optimizer, scheduler,
        sampler, extra checkpointables and RNG states present in the file.

        Returns:
            The remaining checkpoint content (``iteration``, ``extra``, ...).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpointer.load: checkpoint {path!r} not found")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = ckpt.pop("model", ckpt)
        incompatible = self.model.load_state_dict(state, strict=False)
        if incompatible.missing_keys:
            logger.warning("Missing keys in checkpoint: %s", incompatible.missing_keys)
        if incompatible.unexpected_keys:
            logger.warning("Unexpected keys in checkpoint: %s", incompatible.unexpected_keys)
        if model_only:
            return ckpt
        for name, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            if obj is not None and name in ckpt:
                obj.load_state_dict(ckpt.pop(name))
        if self.sampler is not None and "sampler_state" in ckpt:
            self.sampler.load_state_dict(ckpt.pop("sampler_state"))
        for k, obj in self.checkpointables.items():
            if k in ckpt:
                obj.load_state_dict(ckpt.pop(k))
        if "rng_states" in ckpt:
            set_rng_states(ckpt.pop("rng_states"))
        return ckpt

    def resume_or_load(self, path: str | None, *, resume: bool = True) -> dict[str, Any]:
        """With ``resume`` and a ``last_checkpoint`` in ``save_dir``: restore the full state from it.
        Otherwise load only the model weights from ``path`` (nothing if ``path`` is empty/None).

        Returns:
            The checkpoint content; the next iteration is ``result.get("iteration", -1) + 1`` when resumed.
        """
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        if path:
            ckpt = self.load(os.fspath(path), model_only=True)
            ckpt.pop("iteration", None)
            return ckpt
        return {}
