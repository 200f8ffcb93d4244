"""Per-image instance annotations or predictions, with the semantics of ``detectron2.structures.Instances``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Instances"]


def _index_list(item: Any, n: int) -> list[int]:
    if isinstance(item, torch.Tensor):
        item = item.cpu()
        if item.dtype == torch.bool:
            if item.shape != (n,):
                raise IndexError(f"Instances: bool index of shape {list(item.shape)} for {n} instances")
            return item.nonzero().flatten().tolist()
        return item.reshape(-1).tolist()
    arr = np.asarray(item)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"Instances: bool index of shape {list(arr.shape)} for {n} instances")
        return np.nonzero(arr)[0].tolist()
    return arr.reshape(-1).astype(np.int64).tolist()


class Instances:
    """The instances of one image: an image size plus named fields that all have the same length.

    Fields are tensors, :class:`~detcore.structures.Boxes`, masks, keypoints, lists, or any object with
    ``__len__`` and ``__getitem__`` (and ``cat`` to be concatenated). They are set and read as attributes
    (``inst.pred_boxes = Boxes(...)``) or with :meth:`set` / :meth:`get` / :meth:`has` / :meth:`remove`.

    Indexing (``inst[3]``, ``inst[2:5]``, ``inst[bool_mask]``, ``inst[index_tensor]``) indexes every field;
    plain ``list`` fields are indexed element by element, so they also accept masks and index tensors.

    Args:
        image_size: ``(height, width)``.
        **kwargs: fields to set.
    """

    def __init__(self, image_size: tuple[int, int], **kwargs: Any):
        self._image_size = image_size
        self._fields: dict[str, Any] = {}
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set field ``name``; its length must equal the length of the fields already set.

        Raises:
            ValueError: naming the field and both lengths.
        """
        try:
            # __len__ rather than len(): under torch.export a length can be symbolic (a data-dependent count)
            data_len = value.__len__()
        except (TypeError, AttributeError):
            raise TypeError(
                f"Instances field '{name}' must have a length (tensor, Boxes, list, ...), got {type(value).__name__}"
            ) from None
        if self._fields:
            n = self.__len__()
            if isinstance(n, int) and isinstance(data_len, int):
                if n != data_len:
                    raise ValueError(
                        f"Adding a field '{name}' of length {data_len} to Instances of length {n}: "
                        "all fields must have the same length"
                    )
            else:  # symbolic lengths (export): a runtime assertion instead of a branch on unknown sizes
                torch._check(
                    n == data_len,
                    lambda: f"Instances field '{name}' must have the length of the other fields",
                )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        if name not in self._fields:
            raise KeyError(f"Instances has no field '{name}' (fields: {list(self._fields)})")
        del self._fields[name]

    def get(self, name: str) -> Any:
        if name not in self._fields:
            raise KeyError(f"Instances has no field '{name}' (fields: {list(self._fields)})")
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """The field dict itself (modifying it modifies this Instances)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """A new Instances whose fields with a ``.to`` method are moved/cast (others are shared)."""
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> Instances:
        """Index every field; an int gives an Instances of length 1."""
        if isinstance(item, (int, np.integer)):
            item = int(item)
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} out of range for length {n}")
            # a slice (not an int) keeps the instance dimension in every field type
            item = slice(item, None, n)
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if isinstance(v, list) and not isinstance(item, slice):
                # plain lists cannot take tensor or bool indices: index them element by element
                ret.set(k, [v[i] for i in _index_list(item, len(v))])
            else:
                ret.set(k, v[item])
        return ret

    def __len__(self) -> int:
        for v in self._fields.values():
            # use __len__ because len() has to be int and is not friendly to tracing
            return v.__len__()
        raise NotImplementedError("Empty Instances does not support __len__: set a field first")

    def __iter__(self):
        raise NotImplementedError("Instances object is not iterable!")

    @classmethod
    def cat(cls, instance_lists: Sequence[Instances]) -> Instances:
        """Concatenate Instances of one image size with the same fields.

        Tensors use ``torch.cat``, lists are concatenated, other field types use their own ``cat``.
        """
        if not isinstance(instance_lists, (list, tuple)) or len(instance_lists) == 0:
            raise ValueError("Instances.cat: instance_lists must be a non-empty list of Instances")
        if not all(isinstance(i, Instances) for i in instance_lists):
            raise TypeError(
                f"Instances.cat: every element must be Instances, got {[type(i).__name__ for i in instance_lists]}"
            )
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        if not isinstance(image_size, torch.Tensor):  # could be a tensor under tracing
            for i in instance_lists[1:]:
                if i.image_size != image_size:
                    raise ValueError(f"Instances.cat: image sizes differ: {image_size} and {i.image_size}")
        keys = list(instance_lists[0]._fields.keys())
        for i in instance_lists[1:]:
            if list(i._fields.keys()) != keys and set(i._fields.keys()) != set(keys):
                raise ValueError(
                    f"Instances.cat: fields differ: {sorted(keys)} and {sorted(i._fields.keys())}"
                )
        ret = cls(image_size)
        for k in keys:
            values = [i.get(k) for i in instance_lists]
            v0 = values[0]
            if isinstance(v0, torch.Tensor):
                values = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                values = list(itertools.chain(*values))
            elif hasattr(type(v0), "cat"):
                values = type(v0).cat(values)
            else:
                raise ValueError(f"Instances.cat: unsupported type {type(v0).__name__} for field '{k}'")
            ret.set(k, values)
        return ret

    def __str__(self) -> str:
        s = self.__class__.__name__ + "("
        s += f"num_instances={len(self) if self._fields else 0}, "
        s += f"image_height={self._image_size[0]}, "
        s += f"image_width={self._image_size[1]}, "
        s += "fields=[{}])".format(", ".join(f"{k}: {v}" for k, v in self._fields.items()))
        return s

    __repr__ = __str__
