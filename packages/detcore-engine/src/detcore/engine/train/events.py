"""A minimal event storage (detectron2's ``EventStorage``): scalars recorded per iteration by the trainer
and its hooks, read back by writers."""

from __future__ import annotations

import statistics

__all__ = ["EventStorage", "HistoryBuffer", "get_event_storage"]

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost :class:`EventStorage` in use (raises RuntimeError outside ``with EventStorage()``)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' context")
    return _CURRENT_STORAGE_STACK[-1]


class HistoryBuffer:
    """The ``(value, iteration)`` history of one scalar, with windowed median / average.

    Args:
        max_length: number of most recent values kept.
    """

    def __init__(self, max_length: int = 1000000):
        self._max_length = max_length
        self._data: list[tuple[float, int]] = []
        self._count = 0
        self._global_avg = 0.0

    def update(self, value: float, iteration: int) -> None:
        if len(self._data) == self._max_length:
            self._data.pop(0)
        self._data.append((float(value), int(iteration)))
        self._count += 1
        self._global_avg += (float(value) - self._global_avg) / self._count

    def latest(self) -> float:
        return self._data[-1][0]

    def median(self, window_size: int) -> float:
        return float(statistics.median(v for v, _ in self._data[-window_size:]))

    def avg(self, window_size: int) -> float:
        vals = [v for v, _ in self._data[-window_size:]]
        return sum(vals) / len(vals)

    def global_avg(self) -> float:
        return self._global_avg

    def values(self) -> list[tuple[float, int]]:
        return list(self._data)


class EventStorage:
    """Per-iteration scalar store, also a context manager making itself the current storage.

    Args:
        start_iter: the iteration the storage starts at (``iter`` is advanced by the trainer).
    """

    def __init__(self, start_iter: int = 0):
        self.iter = int(start_iter)
        self._history: dict[str, HistoryBuffer] = {}
        self._latest: dict[str, tuple[float, int]] = {}
        self._smoothing_hints: dict[str, bool] = {}

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        """Record ``value`` (a number or 0-dim tensor) for ``name`` at the current iteration.

        Args:
            smoothing_hint: whether writers should smooth this scalar (median over a window) when printing.
        """
        value = float(value)
        self._history.setdefault(name, HistoryBuffer()).update(value, self.iter)
        self._latest[name] = (value, self.iter)
        prev = self._smoothing_hints.get(name)
        if prev is not None and prev != smoothing_hint:
            raise ValueError(f"put_scalar: scalar {name!r} was put with a different smoothing_hint before")
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No history for scalar {name!r}")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        return self._latest

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but scalars with a smoothing hint are the median of the last
        ``window_size`` values."""
        out = {}
        for k, (v, itr) in self._latest.items():
            out[k] = (self._history[k].median(window_size) if self._smoothing_hints[k] else v, itr)
        return out

    def smoothing_hints(self) -> dict[str, bool]:
        return self._smoothing_hints

    def step(self) -> None:
        self.iter += 1

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()
