"""Data loaders for training (infinite, batched, optionally grouped by aspect ratio) and inference
(batch 1), built on torch's ``DataLoader`` (detectron2's ``build_detection_*_loader``)."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from detcore.engine.data.catalog import get_detection_dataset_dicts
from detcore.engine.data.samplers import InferenceSampler, TrainingSampler

__all__ = [
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "MapDataset",
    "ToIterableDataset",
    "build_batch_data_loader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)


def trivial_batch_collator(batch: list) -> list:
    """The batch as the list it is (detection inputs differ in size)."""
    return batch


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed ``random``, ``numpy.random`` (augmentations) from the worker's torch seed, which torch
    derives from the loader's base seed and the worker id."""
    seed = torch.initial_seed() % 2**31
    random.seed(seed)
    np.random.seed(seed)


class DatasetFromList(Dataset):
    """A map-style dataset over a list (items returned as they are; mappers copy before changing)."""

    def __init__(self, items: list):
        if not isinstance(items, list):
            raise TypeError(f"DatasetFromList: items must be a list, got {type(items).__name__}")
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, idx: int) -> Any:
        return self._items[idx]


class MapDataset(Dataset):
    """``mapper(dataset[i])``; when the mapper returns None (e.g. every instance filtered) another index,
    drawn from a generator seeded by ``i``, is tried (up to 32 times)."""

    def __init__(self, dataset: Dataset, mapper: Callable[[Any], Any]):
        self._dataset = dataset
        self._mapper = mapper

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        rng = random.Random(idx)
        cur = idx
        for _ in range(32):
            out = self._mapper(self._dataset[cur])
            if out is not None:
                return out
            cur = rng.randrange(len(self._dataset))
        raise RuntimeError(f"MapDataset: the mapper returned None for 32 tries starting at index {idx}")


class ToIterableDataset(IterableDataset):
    """Iterate ``dataset[i]`` for ``i`` in ``sampler``; with several loader workers each worker takes every
    ``num_workers``-th index of the (deterministic, seeded) sampler stream, so no item is repeated."""

    def __init__(self, dataset: Dataset, sampler: Sampler):
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        if info is None or info.num_workers == 1:
            indices = iter(self.sampler)
        else:
            indices = itertools.islice(self.sampler, info.id, None, info.num_workers)
        for idx in indices:
            yield self.dataset[idx]


class AspectRatioGroupedDataset(IterableDataset):
    """Batches of ``batch_size`` items that all have ``width > height`` or all ``width <= height`` (two
    buckets filled in stream order; a bucket is emitted when full)."""

    def __init__(self, dataset, batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list]:
        # the inner iterator is created now, not on the first next(): a DataLoader draws its base seed from
        # the global torch RNG when iterated, and SimpleTrainer shields exactly the iter() call from that
        return self._batches(iter(self.dataset))

    def _batches(self, items: Iterator[Any]) -> Iterator[list]:
        buckets: list[list] = [[], []]
        for d in items:
            if "image" in d:
                h, w = d["image"].shape[-2:]
            else:
                h, w = d["height"], d["width"]
            bucket = buckets[0 if w > h else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                out = bucket[:]
                bucket.clear()
                yield out


def build_batch_data_loader(
    dataset: Dataset,
    sampler: Sampler,
    total_batch_size: int,
    *,
    aspect_ratio_grouping: bool = False,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    world_size: int = 1,
):
    """An infinite iterable of batches (lists of ``total_batch_size // world_size`` mapped dicts)."""
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"total_batch_size must be a positive multiple of the world size {world_size}, got {total_batch_size}"
        )
    batch_size = total_batch_size // world_size
    iterable = ToIterableDataset(dataset, sampler)
    if aspect_ratio_grouping:
        loader = DataLoader(
            iterable,
            num_workers=num_workers,
            collate_fn=_identity,
            worker_init_fn=worker_init_reset_seed,
            batch_size=None,
        )
        grouped = AspectRatioGroupedDataset(loader, batch_size)
        if collate_fn is None:
            return grouped
        return _MapIterable(grouped, collate_fn)
    return DataLoader(
        iterable,
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn or trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
    )


def _identity(x):
    return x


class _MapIterable:
    def __init__(self, iterable, fn):
        self.iterable, self.fn = iterable, fn

    def __iter__(self):
        it = iter(self.iterable)  # eagerly, like AspectRatioGroupedDataset.__iter__
        return (self.fn(x) for x in it)


def _as_dataset(dataset: str | Sequence[str] | list | Dataset, mapper) -> Dataset:
    if isinstance(dataset, str) or (
        isinstance(dataset, (list, tuple)) and dataset and all(isinstance(n, str) for n in dataset)
    ):
        dataset = get_detection_dataset_dicts(dataset)
    if isinstance(dataset, list):
        dataset = DatasetFromList(dataset)
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset must be a dataset name, a list of names, a list of dicts or a torch Dataset, got "
            f"{type(dataset).__name__}"
        )
    return MapDataset(dataset, mapper) if mapper is not None else dataset


def build_detection_train_loader(
    dataset: str | Sequence[str] | list | Dataset,
    *,
    mapper: Callable | None,
    sampler: Sampler | None = None,
    total_batch_size: int,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    seed: int | None = None,
):
    """Infinite training loader.

    Args:
        dataset: dataset name(s) (looked up in the catalog), a list of dataset dicts, or a map-style Dataset.
        mapper: applied to each item (e.g. :class:`~detcore.engine.data.mapper.DatasetMapper`); None: none.
        sampler: index stream (default :class:`TrainingSampler` with ``seed``).
        total_batch_size: images per step over all ranks.
        aspect_ratio_grouping: batch images of like orientation together.
        num_workers: loader worker processes.
        collate_fn: applied to each batch (default: the list as is).

    Returns:
        an iterable of ``list[dict]`` batches (never ends).
    """
    ds = _as_dataset(dataset, mapper)
    if sampler is None:
        sampler = TrainingSampler(len(ds), seed=seed)
    world_size = getattr(sampler, "_world_size", 1)
    return build_batch_data_loader(
        ds,
        sampler,
        total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        world_size=world_size,
    )


def build_detection_test_loader(
    dataset: str | Sequence[str] | list | Dataset,
    *,
    mapper: Callable | None,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    batch_size: int = 1,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Finite inference loader: each image of this rank's shard once, in order, in batches of
    ``batch_size`` (1 by default, as detectron2's evaluation assumes)."""
    if isinstance(dataset, (str, tuple)) or (
        isinstance(dataset, list) and dataset and isinstance(dataset[0], str)
    ):
        dicts = get_detection_dataset_dicts(dataset, filter_empty=False)
        ds = MapDataset(DatasetFromList(dicts), mapper) if mapper is not None else DatasetFromList(dicts)
    else:
        ds = _as_dataset(dataset, mapper)
    if sampler is None:
        sampler = InferenceSampler(len(ds))
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate_fn or trivial_batch_collator,
    )
