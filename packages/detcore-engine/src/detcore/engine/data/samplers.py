"""Samplers (detectron2's ``TrainingSampler``, ``RepeatFactorTrainingSampler``, ``InferenceSampler``).

Training samplers yield an infinite stream of dataset indices. The global stream is the concatenation of
"epochs", each a shuffled permutation drawn from a generator seeded with ``(seed, epoch)``; rank ``r`` of
``world_size`` takes positions ``r, r + world_size, ...``. Because each epoch is reproducible on its own,
:meth:`state_dict` (the number of indices this rank has yielded) is enough to resume the exact stream.

Note: a ``DataLoader`` iterates its sampler ahead of the model (prefetching), so the count in
``state_dict`` is of indices handed out, which may run ahead of the images trained on. With loader
workers the sampler is iterated by copies inside the worker processes and the main process's copy does
not advance: a trainer resumes by loading ``{"seed", "consumed": iterations * batch_size}`` into the
sampler before building the loader (exact with 0 workers; with workers, batches made by different workers
interleave, so the resumed stream matches to within the items in flight).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "InferenceSampler",
    "RepeatFactorTrainingSampler",
    "TrainingSampler",
    "repeat_factors_from_category_frequency",
]


def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"sampler: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return g


class _StreamSampler(Sampler[int]):
    """Infinite sharded stream over per-epoch index lists; subclasses define :meth:`_epoch`."""

    def __init__(self, seed: int | None, rank: int | None, world_size: int | None):
        if seed is None:
            seed = int(torch.randint(2**31, (1,)).item())
        self._seed = int(seed)
        self._rank, self._world_size = _dist_info(rank, world_size)
        self._consumed = 0

    def _epoch(self, epoch: int) -> list[int]:
        raise NotImplementedError

    def _global_stream(self, start: int) -> Iterator[int]:
        epoch, pos = 0, start
        while True:
            indices = self._epoch(epoch)
            if not indices:
                raise ValueError(f"{type(self).__name__}: an epoch has no indices (empty dataset?)")
            if pos < len(indices):
                yield from indices[pos:]
                pos = 0
            else:
                pos -= len(indices)
            epoch += 1

    def __iter__(self) -> Iterator[int]:
        start = self._rank + self._consumed * self._world_size
        for idx in itertools.islice(self._global_stream(start), 0, None, self._world_size):
            self._consumed += 1
            yield idx

    def state_dict(self) -> dict:
        """``{"seed", "consumed", "world_size"}``: enough to resume this rank's stream."""
        return {"seed": self._seed, "consumed": self._consumed, "world_size": self._world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self._seed:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: seed {state.get('seed')} != {self._seed}"
            )
        if state.get("world_size", self._world_size) != self._world_size:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: saved with world_size {state.get('world_size')}, "
                f"now {self._world_size}"
            )
        consumed = int(state["consumed"])
        if consumed < 0:
            raise ValueError(f"{type(self).__name__}.load_state_dict: consumed must be >= 0, got {consumed}")
        self._consumed = consumed


class TrainingSampler(_StreamSampler):
    """Infinite stream of ``range(size)``: each epoch a random permutation (``shuffle``) or ``0..size-1``.

    Args:
        size: dataset length (> 0).
        shuffle: shuffle each epoch.
        seed: the stream's seed (random if None; pass one for reproducibility and across ranks).
        rank, world_size: shard (default: from torch.distributed, else 0 of 1).
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"TrainingSampler: size must be a positive int, got {size!r}")
        super().__init__(seed, rank, world_size)
        self._size = size
        self._shuffle = shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if self._shuffle:
            return torch.randperm(self._size, generator=_epoch_generator(self._seed, epoch)).tolist()
        return list(range(self._size))


def repeat_factors_from_category_frequency(dataset_dicts: list[dict], repeat_thresh: float) -> torch.Tensor:
    """LVIS-style repeat factor per image: ``r(c) = max(1, sqrt(t / f(c)))`` with ``f(c)`` the fraction of
    images containing category ``c``; an image's factor is the max over its categories (1 without any).

    Returns:
        Tensor[N] float32.
    """
    if not repeat_thresh > 0:
        raise ValueError(
            f"repeat_factors_from_category_frequency: repeat_thresh must be > 0, got {repeat_thresh}"
        )
    if not dataset_dicts:
        raise ValueError("repeat_factors_from_category_frequency: dataset_dicts is empty")
    counts: dict[int, int] = defaultdict(int)
    for d in dataset_dicts:
        for c in {a["category_id"] for a in d.get("annotations", [])}:
            counts[c] += 1
    n = len(dataset_dicts)
    cat_rep = {c: max(1.0, math.sqrt(repeat_thresh / (cnt / n))) for c, cnt in counts.items()}
    reps = [
        max((cat_rep[a["category_id"]] for a in d.get("annotations", [])), default=1.0) for d in dataset_dicts
    ]
    return torch.tensor(reps, dtype=torch.float32)


class RepeatFactorTrainingSampler(_StreamSampler):
    """Infinite stream where image ``i`` appears ``floor(r_i)`` or ``ceil(r_i)`` times per epoch
    (stochastic rounding with mean ``r_i``), shuffled.

    Args:
        repeat_factors (Tensor[N]): per-image factors >= 0 (see :func:`repeat_factors_from_category_frequency`).
        shuffle, seed, rank, world_size: as :class:`TrainingSampler`.
    """

    def __init__(
        self,
        repeat_factors: torch.Tensor,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float64)
        if (
            repeat_factors.dim() != 1
            or len(repeat_factors) == 0
            or not bool(torch.isfinite(repeat_factors).all())
            or bool((repeat_factors < 0).any())
        ):
            raise ValueError(
                "RepeatFactorTrainingSampler: repeat_factors must be a non-empty 1-D tensor of finite values >= 0"
            )
        super().__init__(seed, rank, world_size)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part
        self._shuffle = shuffle

    def _epoch(self, epoch: int) -> list[int]:
        g = _epoch_generator(self._seed, epoch)
        rands = torch.rand(len(self._frac_part), generator=g, dtype=torch.float64)
        reps = (self._int_part + (rands < self._frac_part).double()).long()
        # numpy's repeat: torch.repeat_interleave costs milliseconds per call on CPU
        indices = torch.from_numpy(np.repeat(np.arange(len(reps)), reps.numpy()))
        if self._shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        return indices.tolist()


class InferenceSampler(Sampler[int]):
    """Each index of ``range(size)`` exactly once over all ranks: rank ``r`` gets a contiguous shard
    (sizes differ by at most 1)."""

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"InferenceSampler: size must be a non-negative int, got {size!r}")
        self._size = size
        self._rank, self._world_size = _dist_info(rank, world_size)
        shard = size // self._world_size
        left = size % self._world_size
        sizes = [shard + int(r < left) for r in range(self._world_size)]
        begin = sum(sizes[: self._rank])
        self._local = range(begin, begin + sizes[self._rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._local

    def __len__(self) -> int:
        return len(self._local)
