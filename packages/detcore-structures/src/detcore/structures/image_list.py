"""A batch of images of different sizes padded into one tensor (``detectron2.structures.ImageList``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.nn import functional as F

__all__ = ["ImageList"]


def _round_up(x: Any, stride: int) -> Any:
    # works for ints and for SymInts under torch.export / torch.compile
    return (x + (stride - 1)) // stride * stride


class ImageList:
    """Images of (possibly) different sizes stored as one padded tensor.

    Attributes:
        tensor (Tensor[N, ..., H, W]): the padded batch.
        image_sizes (list[tuple[int, int]]): ``(h, w)`` of each image before padding; image ``i`` is
            ``tensor[i, ..., :h, :w]``.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """The unpadded image ``idx`` (a view of :attr:`tensor`), ``Tensor[..., h, w]``."""
        size = self.image_sizes[idx]
        return self.tensor[idx, ..., : size[0], : size[1]]

    def to(self, *args: Any, **kwargs: Any) -> ImageList:
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        padding_constraints: Mapping[str, int] | None = None,
    ) -> ImageList:
        """Pad images to a common size and batch them.

        The padded size is the maximum ``(H, W)`` of the batch, replaced by ``square_size`` (both sides)
        when ``padding_constraints["square_size"] > 0``, then rounded up to a multiple of the size
        divisibility. Padding goes at the bottom and right and is filled with ``pad_value``.

        Args:
            tensors (list[Tensor[..., H_i, W_i]]): images with equal leading dims (e.g. ``[C, H_i, W_i]``).
            size_divisibility: if > 1, pad H and W up to multiples of it (FPN backbones need this).
            pad_value: fill value of the padding.
            padding_constraints: optional backbone constraints, keys ``"size_divisibility"`` (detectron2
                also reads its typo ``"size_divisiblity"``; both are accepted and override
                ``size_divisibility``) and ``"square_size"``.

        Returns:
            ImageList whose ``tensor`` is ``[N, ..., Hp, Wp]`` (contiguous, dtype/device of ``tensors[0]``).

        Raises:
            ValueError: an empty list, a non-tensor, images of different ranks or leading (channel) dims
                (naming the index and both shapes), or a ``square_size`` smaller than an image.
        """
        if isinstance(tensors, torch.Tensor) or not isinstance(tensors, (list, tuple)):
            raise TypeError(
                f"ImageList.from_tensors: tensors must be a list of Tensor[..., H, W], got {type(tensors).__name__}"
            )
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors: tensors must not be empty")
        first = tensors[0]
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"ImageList.from_tensors: tensors[{i}] must be a Tensor, got {type(t).__name__}"
                )
            if t.dim() < 2:
                raise ValueError(
                    f"ImageList.from_tensors: tensors[{i}] must have shape [..., H, W], got {list(t.shape)}"
                )
            if t.dim() != first.dim() or t.shape[:-2] != first.shape[:-2]:
                raise ValueError(
                    f"ImageList.from_tensors: tensors[{i}] has shape {list(t.shape)} but tensors[0] has shape "
                    f"{list(first.shape)}; all images need the same rank and leading (channel) dims"
                )
        image_sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]
        max_h = image_sizes[0][0]
        max_w = image_sizes[0][1]
        for h, w in image_sizes[1:]:
            max_h = torch.sym_max(max_h, h)
            max_w = torch.sym_max(max_w, w)

        if padding_constraints is not None:
            square_size = padding_constraints.get("square_size", 0)
            if square_size > 0:
                if isinstance(max_h, int) and isinstance(max_w, int) and max(max_h, max_w) > square_size:
                    raise ValueError(
                        f"ImageList.from_tensors: padding_constraints['square_size']={square_size} is smaller "
                        f"than the largest image ({max_h}, {max_w})"
                    )
                max_h = max_w = square_size
            for key in ("size_divisibility", "size_divisiblity"):
                if key in padding_constraints:
                    size_divisibility = padding_constraints[key]
        if size_divisibility > 1:
            max_h = _round_up(max_h, size_divisibility)
            max_w = _round_up(max_w, size_divisibility)

        symbolic = any(isinstance(v, torch.SymInt) for v in (max_h, max_w, *itertools.chain(*image_sizes)))
        if symbolic:
            # torch.export / torch.compile with dynamic sizes: writing into slices of a symbolic-sized
            # buffer adds guards that specialise on the example sizes; padding each image does not.
            batched = torch.stack(
                [F.pad(t, [0, max_w - t.shape[-1], 0, max_h - t.shape[-2]], value=pad_value) for t in tensors]
            )
        else:
            # eager: one allocation and one copy per image
            batch_shape = [len(tensors), *first.shape[:-2], max_h, max_w]
            batched = first.new_full(batch_shape, pad_value)
            for i, img in enumerate(tensors):
                batched[i, ..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched, image_sizes)

    def __repr__(self) -> str:
        return f"ImageList(tensor={list(self.tensor.shape)}, image_sizes={self.image_sizes})"
