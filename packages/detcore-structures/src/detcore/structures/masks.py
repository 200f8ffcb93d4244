"""Instance masks: :class:`BitMasks`, :class:`PolygonMasks`, :class:`ROIMasks` and polygon rasterization,
with the semantics of ``detectron2.structures.masks``."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from detcore.structures.boxes import Boxes

__all__ = [
    "BitMasks",
    "PolygonMasks",
    "ROIMasks",
    "polygon_area",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
]


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area of a simple polygon with vertices ``(x[i], y[i])`` (shoelace formula)."""
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def polygons_to_bitmask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterize the union of polygons with COCO's rasterizer (pycocotools).

    Args:
        polygons (list[ndarray[2k]]): flat ``[x0, y0, x1, y1, ...]`` polygons of one instance.
        height, width: size of the mask.

    Returns:
        ndarray[height, width] of bool.
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    rle = mask_util.merge(rles)
    with warnings.catch_warnings():
        # pycocotools' Cython decode trips numpy 2's __array__(copy=...) deprecation; not ours to fix
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def rasterize_polygons_within_box(
    polygons: list[np.ndarray], box: np.ndarray, mask_size: int
) -> torch.Tensor:
    """Rasterize the polygons of one instance into a ``mask_size x mask_size`` mask of ``box``.

    The polygons are shifted by ``(box[0], box[1])`` and scaled by ``mask_size / box side`` (sides below
    0.1 count as 0.1), then rasterized by :func:`polygons_to_bitmask`. This is how Mask R-CNN mask
    targets are made from polygon annotations.

    Returns:
        Tensor[mask_size, mask_size] of bool.
    """
    w, h = box[2] - box[0], box[3] - box[1]
    ratio_h = mask_size / max(h, 0.1)
    ratio_w = mask_size / max(w, 0.1)
    out = []
    for p in polygons:
        p = np.array(p, dtype=np.float64)  # copy
        p[0::2] = (p[0::2] - box[0]) * ratio_w
        p[1::2] = (p[1::2] - box[1]) * ratio_h
        out.append(p)
    return torch.from_numpy(polygons_to_bitmask(out, mask_size, mask_size))


def _bool_index_to_list(item: torch.Tensor) -> list[int]:
    if item.dtype == torch.bool:
        if item.dim() != 1:
            raise IndexError(f"a bool index must be 1-D, got shape {list(item.shape)}")
        return item.nonzero().squeeze(1).cpu().tolist()
    if item.dtype in (torch.int32, torch.int64):
        return item.cpu().reshape(-1).tolist()
    raise IndexError(f"unsupported index tensor dtype {item.dtype}")


class BitMasks:
    """Instance masks as a ``tensor (Tensor[N, H, W])`` of bool."""

    def __init__(self, tensor: torch.Tensor | np.ndarray):
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to(torch.bool)
        else:
            tensor = torch.as_tensor(np.asarray(tensor), dtype=torch.bool)
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks: tensor must have shape [N, H, W], got {list(tensor.shape)}")
        self.image_size = tensor.shape[1:]
        self.tensor = tensor

    def to(self, *args: Any, **kwargs: Any) -> BitMasks:
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> BitMasks:
        """``masks[3]`` (one mask), ``masks[2:10]``, ``masks[bool_mask]``, ``masks[index_tensor]``."""
        if isinstance(item, (int, np.integer)):
            return BitMasks(self.tensor[int(item)].unsqueeze(0))
        m = self.tensor[item]
        if m.dim() != 3:
            raise IndexError(f"BitMasks: indexing with {item!r} did not give [K, H, W] (got {list(m.shape)})")
        return BitMasks(m)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self.tensor)})"

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def nonempty(self) -> torch.Tensor:
        """Returns: Tensor[N] bool, True for masks with at least one pixel set."""
        return self.tensor.flatten(1).any(dim=1)

    def area(self) -> torch.Tensor:
        """Returns: Tensor[N] int64, number of pixels set."""
        return self.tensor.flatten(1).sum(dim=1)

    @staticmethod
    def from_polygon_masks(
        polygon_masks: PolygonMasks | list[list[np.ndarray]], height: int, width: int
    ) -> BitMasks:
        """Rasterize polygon masks at ``height x width``."""
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        masks = [polygons_to_bitmask(p, height, width) for p in polygon_masks]
        if len(masks) == 0:
            return BitMasks(torch.empty(0, height, width, dtype=torch.bool))
        return BitMasks(torch.stack([torch.from_numpy(m) for m in masks]))

    @staticmethod
    def from_roi_masks(
        roi_masks: ROIMasks, boxes: Boxes | torch.Tensor, height: int, width: int, threshold: float = 0.5
    ) -> BitMasks:
        """Paste ROI masks into ``height x width`` images (see :meth:`ROIMasks.to_bitmasks`).

        detectron2's version of this method omits ``boxes`` and cannot work; here they are required.
        """
        return roi_masks.to_bitmasks(boxes, height, width, threshold)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Crop each mask by its box and resize to ``mask_size x mask_size`` (Mask R-CNN targets).

        Like detectron2: ROIAlign (``aligned=True``, ``sampling_ratio=0``, scale 1) of the masks as float,
        then ``>= 0.5``. Uses ``detcore.ops.roi_align``.

        Args:
            boxes (Tensor[N, 4]): XYXY box of each mask, in mask pixels.
            mask_size: output side.

        Returns:
            Tensor[N, mask_size, mask_size] of bool, on this mask's device.
        """
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be a Tensor[N, 4], got {getattr(boxes, 'shape', type(boxes))}")
        if len(boxes) != len(self):
            raise ValueError(f"boxes must have one box per mask: {len(boxes)} boxes for {len(self)} masks")
        device = self.tensor.device
        if len(boxes) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        from detcore.ops import roi_align

        boxes = boxes.to(device=device, dtype=torch.float32)
        batch_inds = torch.arange(len(boxes), device=device, dtype=boxes.dtype)[:, None]
        rois = torch.cat([batch_inds, boxes], dim=1)
        masks = self.tensor.to(dtype=torch.float32)[:, None, :, :]
        output = roi_align(masks, rois, (mask_size, mask_size), 1.0, 0, True).squeeze(1)
        return output >= 0.5

    def get_bounding_boxes(self) -> Boxes:
        """Tight box of each mask, ``(x_min, y_min, x_max + 1, y_max + 1)`` of its set pixels; an empty
        mask gives ``(0, 0, 0, 0)``."""
        t = self.tensor
        n = t.shape[0]
        x_any = t.any(dim=1)  # [N, W]
        y_any = t.any(dim=2)  # [N, H]
        boxes = torch.zeros(n, 4, dtype=torch.float32, device=t.device)
        if n == 0 or t.shape[1] == 0 or t.shape[2] == 0:
            return Boxes._wrap(boxes)
        w, h = x_any.shape[1], y_any.shape[1]
        x0 = x_any.to(torch.uint8).argmax(dim=1)
        x1 = w - x_any.flip(1).to(torch.uint8).argmax(dim=1)
        y0 = y_any.to(torch.uint8).argmax(dim=1)
        y1 = h - y_any.flip(1).to(torch.uint8).argmax(dim=1)
        nonempty = x_any.any(dim=1)
        boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
        boxes[~nonempty] = 0
        return Boxes._wrap(boxes)

    @staticmethod
    def cat(bitmasks_list: Sequence[BitMasks]) -> BitMasks:
        """Concatenate BitMasks of one image size."""
        if not isinstance(bitmasks_list, (list, tuple)) or len(bitmasks_list) == 0:
            raise ValueError("BitMasks.cat: bitmasks_list must be a non-empty list of BitMasks")
        if not all(isinstance(b, BitMasks) for b in bitmasks_list):
            raise TypeError(
                f"BitMasks.cat: every element must be BitMasks, got {[type(b).__name__ for b in bitmasks_list]}"
            )
        return type(bitmasks_list[0])(torch.cat([b.tensor for b in bitmasks_list], dim=0))


def _as_polygon(p: Any, where: str) -> np.ndarray:
    if isinstance(p, torch.Tensor):
        p = p.cpu().numpy()
    arr = np.asarray(p).astype(np.float64).reshape(-1)
    if len(arr) % 2 != 0 or len(arr) < 6:
        raise ValueError(
            f"PolygonMasks: {where} must be a flat [x0, y0, x1, y1, ...] polygon with an even number of "
            f">= 6 coordinates, got {len(arr)}"
        )
    return arr


class PolygonMasks:
    """Instance masks as polygons: ``polygons[i]`` is the list of polygons of instance ``i``, each a
    float64 ``ndarray[2k]`` ``[x0, y0, x1, y1, ...]`` (k >= 3) in absolute image coordinates. Always on CPU."""

    def __init__(self, polygons: list[list[np.ndarray | torch.Tensor | list[float]]]):
        if not isinstance(polygons, list):
            raise ValueError(
                f"PolygonMasks: polygons must be a list (per instance) of lists of polygons, got {type(polygons).__name__}"
            )
        out = []
        for i, per_instance in enumerate(polygons):
            if not isinstance(per_instance, (list, tuple)):
                raise ValueError(
                    f"PolygonMasks: polygons[{i}] must be a list of polygons, got {type(per_instance).__name__}"
                )
            out.append([_as_polygon(p, f"polygons[{i}][{j}]") for j, p in enumerate(per_instance)])
        self.polygons: list[list[np.ndarray]] = out

    def to(self, *args: Any, **kwargs: Any) -> PolygonMasks:
        """Polygons stay on CPU as numpy arrays; returns self."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_bounding_boxes(self) -> Boxes:
        """Axis-aligned box of each instance's polygons (detectron2: an instance without polygons gives
        ``(inf, inf, 0, 0)``)."""
        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for idx, per_instance in enumerate(self.polygons):
            minxy = np.array([np.inf, np.inf], dtype=np.float32)
            maxxy = np.zeros(2, dtype=np.float32)
            for p in per_instance:
                coords = p.reshape(-1, 2).astype(np.float32)
                minxy = np.minimum(minxy, coords.min(axis=0))
                maxxy = np.maximum(maxxy, coords.max(axis=0))
            boxes[idx, :2] = torch.from_numpy(minxy)
            boxes[idx, 2:] = torch.from_numpy(maxxy)
        return Boxes._wrap(boxes)

    def nonempty(self) -> torch.Tensor:
        """Returns: Tensor[N] bool, True for instances with at least one polygon."""
        return torch.tensor([len(p) > 0 for p in self.polygons], dtype=torch.bool)

    def __getitem__(self, item: int | slice | Sequence[int] | torch.Tensor) -> PolygonMasks:
        """``masks[3]``, ``masks[2:10]``, ``masks[[1, 4]]``, ``masks[bool_tensor]``, ``masks[index_tensor]``."""
        if isinstance(item, (int, np.integer)):
            selected = [self.polygons[int(item)]]
        elif isinstance(item, slice):
            selected = self.polygons[item]
        elif isinstance(item, torch.Tensor):
            selected = [self.polygons[i] for i in _bool_index_to_list(item)]
        elif isinstance(item, (list, tuple, np.ndarray)):
            arr = np.asarray(item)
            if arr.dtype == bool:
                if len(arr) != len(self):
                    raise IndexError(
                        f"PolygonMasks: bool index of length {len(arr)} for {len(self)} instances"
                    )
                arr = np.nonzero(arr)[0]
            selected = [self.polygons[int(i)] for i in arr.reshape(-1)]
        else:
            raise IndexError(f"PolygonMasks: unsupported index type {type(item).__name__}")
        new = PolygonMasks.__new__(PolygonMasks)
        new.polygons = selected
        return new

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self.polygons)})"

    def __len__(self) -> int:
        return len(self.polygons)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Rasterize each instance's polygons inside its box at ``mask_size x mask_size``
        (see :func:`rasterize_polygons_within_box`).

        Args:
            boxes (Tensor[N, 4]): XYXY box of each instance.

        Returns:
            Tensor[N, mask_size, mask_size] of bool, on the device of ``boxes``.
        """
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be a Tensor[N, 4], got {getattr(boxes, 'shape', type(boxes))}")
        if len(boxes) != len(self):
            raise ValueError(
                f"boxes must have one box per instance: {len(boxes)} boxes for {len(self)} instances"
            )
        device = boxes.device
        # box arithmetic in the boxes' own precision (float32 for Boxes), as detectron2 does
        work_dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
        boxes_np = boxes.detach().to("cpu", work_dtype).numpy()
        results = [rasterize_polygons_within_box(p, b, mask_size) for p, b in zip(self.polygons, boxes_np)]
        if len(results) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(results, dim=0).to(device=device)

    def area(self) -> torch.Tensor:
        """Returns: Tensor[N] float64, the summed shoelace area of each instance's polygons (overlaps and
        holes are not accounted for, as in detectron2)."""
        areas = [sum(polygon_area(p[0::2], p[1::2]) for p in per_instance) for per_instance in self.polygons]
        return torch.tensor(areas, dtype=torch.float64)

    @staticmethod
    def cat(polymasks_list: Sequence[PolygonMasks]) -> PolygonMasks:
        """Concatenate PolygonMasks."""
        if not isinstance(polymasks_list, (list, tuple)) or len(polymasks_list) == 0:
            raise ValueError("PolygonMasks.cat: polymasks_list must be a non-empty list of PolygonMasks")
        if not all(isinstance(p, PolygonMasks) for p in polymasks_list):
            raise TypeError(
                f"PolygonMasks.cat: every element must be PolygonMasks, got {[type(p).__name__ for p in polymasks_list]}"
            )
        new = PolygonMasks.__new__(PolygonMasks)
        new.polygons = list(itertools.chain.from_iterable(p.polygons for p in polymasks_list))
        return new


class ROIMasks:
    """Per-box masks in box coordinates, ``tensor (Tensor[N, M, M])`` (e.g. mask head outputs) that
    become image masks by pasting (:meth:`to_bitmasks`)."""

    def __init__(self, tensor: torch.Tensor):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
            shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"ROIMasks: tensor must be a Tensor[N, M, M], got {shape}")
        self.tensor = tensor

    def to(self, *args: Any, **kwargs: Any) -> ROIMasks:
        return ROIMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: int | slice | torch.Tensor) -> ROIMasks:
        if isinstance(item, (int, np.integer)):
            return ROIMasks(self.tensor[int(item)].unsqueeze(0))
        t = self.tensor[item]
        if t.dim() != 3:
            raise IndexError(f"ROIMasks: indexing with {item!r} did not give [K, M, M] (got {list(t.shape)})")
        return ROIMasks(t)

    def __repr__(self) -> str:
        return f"ROIMasks(num_instances={len(self.tensor)})"

    @staticmethod
    def cat(roimasks_list: Sequence[ROIMasks]) -> ROIMasks:
        if not isinstance(roimasks_list, (list, tuple)) or len(roimasks_list) == 0:
            raise ValueError("ROIMasks.cat: roimasks_list must be a non-empty list of ROIMasks")
        return ROIMasks(torch.cat([m.tensor for m in roimasks_list], dim=0))

    def to_bitmasks(
        self, boxes: Boxes | torch.Tensor, height: int, width: int, threshold: float = 0.5
    ) -> BitMasks:
        """Paste each mask into its box of a ``height x width`` image with
        ``detcore.ops.paste_masks_in_image`` and threshold it.

        Args:
            boxes (Boxes | Tensor[N, 4]): XYXY image boxes.
        """
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(
                f"boxes must be Boxes or a Tensor[N, 4], got {getattr(boxes, 'shape', type(boxes))}"
            )
        n, num_boxes = self.tensor.shape[0], boxes.shape[0]
        if isinstance(n, int) and isinstance(num_boxes, int):
            if num_boxes != n:
                raise ValueError(f"boxes must have one box per mask: {num_boxes} boxes for {n} masks")
        else:  # symbolic counts (torch.export): a run-time assertion
            torch._check(num_boxes == n, lambda: "boxes must have one box per mask")
        from detcore.ops import paste_masks_in_image

        return BitMasks(paste_masks_in_image(self.tensor, boxes, (height, width), threshold=threshold))
