"""Trainer hooks and metric writers (detectron2's ``engine.hooks`` and ``utils.events`` writers).

Usual order: ``IterationTimer, LRScheduler, PeriodicCheckpointer, EvalHook, PeriodicWriter``.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from detcore.engine.checkpoint import Checkpointer
from detcore.engine.train.events import EventStorage, get_event_storage
from detcore.engine.train.trainer import HookBase

__all__ = [
    "CommonMetricPrinter",
    "EvalHook",
    "EventWriter",
    "IterationTimer",
    "JSONWriter",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "TensorboardXWriter",
]


class IterationTimer(HookBase):
    """Puts ``time`` (seconds of the step, hooks after this one excluded) each iteration and logs the
    total training time at the end."""

    def __init__(self) -> None:
        self._step_start = 0.0
        self._train_start = 0.0
        self.total_time = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        self.total_time = time.perf_counter() - self._train_start


class LRScheduler(HookBase):
    """Records ``lr`` (of the largest parameter group) then steps the scheduler, after every iteration.

    Args:
        optimizer, scheduler: default to ``trainer.optimizer`` / ``trainer.scheduler``.
    """

    def __init__(self, optimizer=None, scheduler=None):
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if self._scheduler is None:
            self._scheduler = getattr(self.trainer, "scheduler", None)
        if self._scheduler is None:
            raise ValueError("LRScheduler hook: no scheduler given and trainer has no 'scheduler'")
        groups = self._optimizer.param_groups
        self._best = max(range(len(groups)), key=lambda i: (len(groups[i]["params"]), -i))

    @property
    def scheduler(self):
        return self._scheduler

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self._scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves ``{prefix}_{iter:07d}`` after every ``period`` iterations and ``{prefix}_final`` at the end of a
    completed run (nothing is saved for an iteration that raised).

    Args:
        checkpointer: a :class:`~detcore.engine.checkpoint.Checkpointer`.
        period: iterations between checkpoints (> 0).
        max_to_keep: keep only this many most recent periodic checkpoints (None: all).
        file_prefix: file name prefix.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_to_keep: int | None = None,
        file_prefix: str = "model",
    ):
        if not isinstance(period, int) or period <= 0:
            raise ValueError(f"PeriodicCheckpointer: period must be a positive int, got {period!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"PeriodicCheckpointer: max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.checkpointer = checkpointer
        self.period = period
        self.max_to_keep = max_to_keep
        self.file_prefix = file_prefix
        self._recent: list[str] = []

    def _save(self, name: str, iteration: int) -> None:
        path = self.checkpointer.save(name, iteration=iteration)
        if path is None or name.endswith("_final") or self.max_to_keep is None:
            return
        self._recent.append(path)
        while len(self._recent) > self.max_to_keep:
            old = self._recent.pop(0)
            if os.path.exists(old) and old != self.checkpointer.get_checkpoint_file():
                os.remove(old)

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0:
            self._save(f"{self.file_prefix}_{it:07d}", it)

    def after_train(self) -> None:
        if self.trainer.completed and self.trainer.max_iter > self.trainer.start_iter:
            self._save(f"{self.file_prefix}_final", self.trainer.max_iter - 1)


class EvalHook(HookBase):
    """Calls ``eval_function()`` every ``eval_period`` iterations and after a completed run.

    A dict result of numbers (nested dicts flattened with "/") is also put into the event storage.
    ``self.results`` holds ``(iteration, result)`` pairs (iteration = the last completed one).
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Any]):
        if not callable(eval_function):
            raise TypeError("EvalHook: eval_function must be callable")
        self._period = int(eval_period)
        self._func = eval_function
        self.results: list[tuple[int, Any]] = []
        self._last_eval = -1

    def _do_eval(self, iteration: int) -> None:
        if iteration == self._last_eval:
            return
        res = self._func()
        self._last_eval = iteration
        self.results.append((iteration, res))
        if isinstance(res, dict):
            flat = _flatten(res)
            storage = self.trainer.storage
            for k, v in flat.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    storage.put_scalar(k, v, smoothing_hint=False)

    def after_step(self) -> None:
        nxt = self.trainer.iter + 1
        if self._period > 0 and nxt % self._period == 0 and nxt != self.trainer.max_iter:
            self._do_eval(self.trainer.iter)

    def after_train(self) -> None:
        if self.trainer.completed and self.trainer.max_iter > self.trainer.start_iter:
            self._do_eval(self.trainer.max_iter - 1)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


class EventWriter:
    """Base class of writers called by :class:`PeriodicWriter`."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Appends one JSON object per logged iteration to ``json_file`` (e.g. ``DIR/metrics.jsonl``):
    ``{"iteration": i, "total_loss": ..., <each loss>: ..., "lr": ..., "time": ..., "data_time": ...}``.

    Args:
        json_file: output path (appended to, so a resumed run continues the file).
        window_size: scalars with a smoothing hint are the median of this many values (1: the raw values).
    """

    def __init__(self, json_file: str | os.PathLike, window_size: int = 1):
        self._path = os.fspath(json_file)
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        self._file = open(self._path, "a")  # noqa: SIM115 - kept open for the run
        self._window = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window).items():
            if itr > self._last_write:
                by_iter[itr][k] = v
        for itr in sorted(by_iter):
            self._file.write(json.dumps({"iteration": itr, **by_iter[itr]}, sort_keys=True) + "\n")
        if by_iter:
            self._last_write = max(by_iter)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class CommonMetricPrinter(EventWriter):
    """Prints ``eta, iter i/max [####....] losses, time, data_time, lr`` (losses median-smoothed).

    Args:
        max_iter: total iterations (for the ETA and the bar).
        window_size: smoothing window.
        file: output stream (default: ``sys.stdout`` at write time).
    """

    def __init__(self, max_iter: int, window_size: int = 20, file: TextIO | None = None, bar_width: int = 20):
        self._max_iter = max_iter
        self._window = window_size
        self._file = file
        self._bar_width = bar_width
        self._last_printed = -1

    def _eta(self, storage: EventStorage, iteration: int) -> str:
        try:
            t = storage.history("time").median(self._window)
        except KeyError:
            return "N/A"
        return str(datetime.timedelta(seconds=int(t * (self._max_iter - iteration - 1))))

    def write(self) -> None:
        storage = get_event_storage()
        # the last training iteration with metrics (evaluation results put later do not make a new line)
        train_iters = [
            itr for k, (_, itr) in storage.latest().items() if k in ("time", "data_time", "total_loss")
        ]
        iteration = max(train_iters) if train_iters else storage.iter
        if iteration == self._last_printed:
            return
        self._last_printed = iteration
        done = min(iteration + 1, self._max_iter)
        filled = int(self._bar_width * done / max(self._max_iter, 1))
        bar = "#" * filled + "." * (self._bar_width - filled)
        parts = [f"eta: {self._eta(storage, iteration)}", f"iter: {done}/{self._max_iter} [{bar}]"]
        hist = storage.histories()
        for k in sorted(hist):
            if "loss" in k:
                parts.append(f"{k}: {hist[k].median(self._window):.4g}")
        for k in ("time", "data_time"):
            if k in hist:
                parts.append(f"{k}: {hist[k].median(self._window):.4f}")
        if "lr" in hist:
            parts.append(f"lr: {hist['lr'].latest():.5g}")
        print("  ".join(parts), file=self._file or sys.stdout, flush=True)


class TensorboardXWriter(EventWriter):
    """Writes scalars to TensorBoard event files in ``log_dir`` (needs the ``tensorboard`` package).

    Raises:
        ImportError: when tensorboard is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike, window_size: int = 20, **kwargs):
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "TensorboardXWriter needs the 'tensorboard' package (pip install tensorboard); "
                "use JSONWriter instead"
            )
        from torch.utils.tensorboard import SummaryWriter

        self._window = window_size
        self._writer = SummaryWriter(os.fspath(log_dir), **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window).items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last

    def close(self) -> None:
        self._writer.close()


class PeriodicWriter(HookBase):
    """Calls each writer's ``write()`` every ``period`` iterations, after the last one, and at the end of
    training (then ``close()``).

    Args:
        writers: :class:`EventWriter` instances.
        period: iterations between writes (> 0).
    """

    def __init__(self, writers: Sequence[EventWriter], period: int = 20):
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError(
                    f"PeriodicWriter: writers must be EventWriter instances, got {type(w).__name__}"
                )
        if not isinstance(period, int) or period <= 0:
            raise ValueError(f"PeriodicWriter: period must be a positive int, got {period!r}")
        self._writers = list(writers)
        self._period = period
        self._last_written = -1

    def _write(self) -> None:
        for w in self._writers:
            w.write()
        self._last_written = self.trainer.iter

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            self._write()

    def after_train(self) -> None:
        try:
            # scalars put since the last write (e.g. by a run stopped by an exception) are still written
            latest = self.trainer.storage.latest()
            if latest and max(itr for _, itr in latest.values()) > self._last_written:
                for w in self._writers:
                    w.write()
        finally:
            for w in self._writers:
                w.close()
