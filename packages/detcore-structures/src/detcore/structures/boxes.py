"""Axis-aligned boxes: :class:`BoxMode` conversions, :class:`Boxes` and pairwise box functions.

Semantics follow ``detectron2.structures.boxes``. Coordinates are continuous: a box ``(x0, y0, x1, y1)``
covers ``[x0, x1] x [y0, y1]`` and its area is ``(x1 - x0) * (y1 - y0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from typing import Any, Union

import numpy as np
import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

__all__ = [
    "BoxMode",
    "Boxes",
    "matched_pairwise_iou",
    "pairwise_intersection",
    "pairwise_ioa",
    "pairwise_iou",
    "pairwise_point_box_distance",
]

_RawBoxType = Union[list[float], tuple[float, ...], torch.Tensor, np.ndarray]  # noqa: UP007 (runtime alias)

# On CPU pairwise_iou works on blocks of at most this many output elements (16 MiB in float32), so its
# peak memory is two block-sized temporaries plus the [N, M] output. Smaller blocks fit in cache but
# multiply the number of kernel launches, which costs more than it saves on a busy 2-thread machine.
_IOU_BLOCK_ELEMENTS = 1 << 22
# Above this many output elements, CPU pairwise_iou uses the native ``detcore.ops.box_iou`` when installed.
_NATIVE_MIN_ELEMENTS = 4096


class BoxMode(IntEnum):
    """How a box is represented.

    * ``XYXY_ABS``: ``(x0, y0, x1, y1)`` in absolute floating point coordinates.
    * ``XYWH_ABS``: ``(x0, y0, w, h)`` in absolute floating point coordinates.
    * ``XYXY_REL`` / ``XYWH_REL``: the same relative to the image size. Named for compatibility;
      converting them raises ``ValueError`` (the image size is not known to :meth:`convert`).
    * ``XYWHA_ABS``: ``(xc, yc, w, h, a)``, a rotated box: center, size and angle in degrees,
      counter-clockwise.
    """

    XYXY_ABS = 0
    XYWH_ABS = 1
    XYXY_REL = 2
    XYWH_REL = 3
    XYWHA_ABS = 4

    @staticmethod
    def convert(box: _RawBoxType, from_mode: BoxMode, to_mode: BoxMode) -> _RawBoxType:
        """Convert one box (list/tuple of 4 or 5 numbers) or a batch (``Tensor[N, k]`` / ``ndarray[N, k]``).

        The result has the input's type (list, tuple, ndarray or tensor; dtype and device kept).
        ``XYWHA_ABS -> XYXY_ABS`` gives the axis-aligned bounding box of the rotated box (computed in
        float64); ``XYXY_ABS``/``XYWH_ABS -> XYWHA_ABS`` gives the same box with angle 0.

        Raises:
            ValueError: relative modes, or a box whose length does not match ``from_mode``.
        """
        from_mode = BoxMode(from_mode)
        to_mode = BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        relative = (BoxMode.XYXY_REL, BoxMode.XYWH_REL)
        if from_mode in relative or to_mode in relative:
            raise ValueError(
                f"BoxMode.convert: relative modes are not supported (from_mode={from_mode.name}, "
                f"to_mode={to_mode.name}); convert to absolute coordinates with the image size first"
            )
        original_type = type(box)
        is_numpy = isinstance(box, np.ndarray)
        single_box = isinstance(box, (list, tuple))
        if single_box:
            if len(box) not in (4, 5):
                raise ValueError(
                    f"BoxMode.convert: a single box must have 4 or 5 numbers, got {len(box)}: {box!r}"
                )
            arr = torch.tensor(box, dtype=torch.float64)[None, :]
        elif is_numpy:
            arr = torch.from_numpy(np.asarray(box)).clone()
        elif isinstance(box, torch.Tensor):
            arr = box.clone()
        else:
            raise TypeError(
                f"BoxMode.convert: box must be a list, tuple, numpy array or torch.Tensor, got {original_type}"
            )
        expected = 5 if from_mode == BoxMode.XYWHA_ABS else 4
        if arr.dim() != 2 or arr.shape[-1] != expected:
            raise ValueError(
                f"BoxMode.convert: boxes in {from_mode.name} must have shape [N, {expected}], got {list(arr.shape)}"
            )

        if from_mode == BoxMode.XYWHA_ABS:
            if to_mode == BoxMode.XYXY_ABS:
                arr = _xywha_to_xyxy(arr)
            else:  # XYWH_ABS
                arr = _xyxy_to_xywh(_xywha_to_xyxy(arr))
        elif to_mode == BoxMode.XYWHA_ABS:
            xywh = arr if from_mode == BoxMode.XYWH_ABS else _xyxy_to_xywh(arr)
            ctr = xywh[:, :2] + xywh[:, 2:] / 2.0
            arr = torch.cat([ctr, xywh[:, 2:], xywh.new_zeros((xywh.shape[0], 1))], dim=1)
        elif from_mode == BoxMode.XYWH_ABS:  # -> XYXY_ABS
            arr = torch.cat([arr[:, :2], arr[:, :2] + arr[:, 2:]], dim=1)
        else:  # XYXY_ABS -> XYWH_ABS
            arr = _xyxy_to_xywh(arr)

        if single_box:
            return original_type(arr.flatten().tolist())
        if is_numpy:
            return arr.numpy()
        return arr


def _xyxy_to_xywh(arr: torch.Tensor) -> torch.Tensor:
    return torch.cat([arr[:, :2], arr[:, 2:4] - arr[:, :2]], dim=1)


def _xywha_to_xyxy(arr: torch.Tensor) -> torch.Tensor:
    dtype = arr.dtype
    a = arr.double()
    theta = a[:, 4] * (torch.pi / 180.0)
    c = theta.cos().abs()
    s = theta.sin().abs()
    w, h = a[:, 2], a[:, 3]
    new_w = c * w + s * h
    new_h = c * h + s * w
    x0 = a[:, 0] - new_w / 2.0
    y0 = a[:, 1] - new_h / 2.0
    return torch.stack([x0, y0, x0 + new_w, y0 + new_h], dim=1).to(dtype)


def _as_box_tensor(tensor: Any, width: int, cls_name: str) -> torch.Tensor:
    """Shared constructor logic of Boxes / RotatedBoxes: float tensor [N, width]."""
    if isinstance(tensor, torch.Tensor):
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
    else:
        tensor = torch.as_tensor(np.asarray(tensor, dtype=np.float32) if not _is_empty(tensor) else [])
        tensor = tensor.to(torch.float32)
    # guard_or_false: a tensor of symbolic (data-dependent) size under export is taken as non-empty
    if guard_or_false(tensor.numel() == 0):
        tensor = tensor.reshape((-1, width))
    if tensor.dim() != 2 or tensor.shape[-1] != width:
        raise ValueError(f"{cls_name}: tensor must have shape [N, {width}], got {list(tensor.shape)}")
    if tensor.device.type == "cpu" and not _is_tracing() and not bool(torch.isfinite(tensor).all()):
        bad = (~torch.isfinite(tensor)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{cls_name}: tensor must hold finite coordinates; rows {bad} contain inf or NaN")
    return tensor


def _is_empty(x: Any) -> bool:
    try:
        return len(x) == 0
    except TypeError:
        return False


def _is_tracing() -> bool:
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return torch.compiler.is_compiling() or exporting or torch.jit.is_tracing()


class Boxes:
    """A list of axis-aligned boxes stored as ``tensor (Tensor[N, 4])`` in ``XYXY_ABS``.

    Floating tensors keep their dtype; anything else becomes float32. Empty input becomes ``(0, 4)``.
    Unlike detectron2, construction from a CPU tensor checks that every coordinate is finite
    (``torch.isfinite``) and raises ``ValueError`` otherwise; CUDA tensors are not checked (that
    would synchronise the device), nor are tensors under tracing/compilation.
    """

    BoxSizeType = Union[list[int], tuple[int, int]]  # noqa: UP007 (runtime alias)

    def __init__(self, tensor: torch.Tensor | np.ndarray | Sequence[Sequence[float]]):
        self.tensor = _as_box_tensor(tensor, 4, "Boxes")

    @classmethod
    def _wrap(cls, tensor: torch.Tensor) -> Boxes:
        """Build from a tensor already known to be valid (no copy, no checks)."""
        obj = cls.__new__(cls)
        obj.tensor = tensor
        return obj

    def clone(self) -> Boxes:
        return self._wrap(self.tensor.clone())

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        return self._wrap(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> torch.Tensor:
        """Returns: Tensor[N], ``(x1 - x0) * (y1 - y0)`` (negative for inverted boxes)."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def clip(self, box_size: BoxSizeType) -> None:
        """Clip (in place) x to ``[0, width]`` and y to ``[0, height]``; ``box_size`` is ``(height, width)``."""
        if not _is_tracing() and not bool(torch.isfinite(self.tensor).all()):
            raise ValueError("Boxes.clip: box tensor contains inf or NaN")
        h, w = box_size
        x1 = self.tensor[:, 0].clamp(min=0, max=w)
        y1 = self.tensor[:, 1].clamp(min=0, max=h)
        x2 = self.tensor[:, 2].clamp(min=0, max=w)
        y2 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """Returns: Tensor[N] bool, True where both width and height are ``> threshold``."""
        box = self.tensor
        widths = box[:, 2] - box[:, 0]
        heights = box[:, 3] - box[:, 1]
        return (widths > threshold) & (heights > threshold)

    def inside_box(self, box_size: BoxSizeType, boundary_threshold: int = 0) -> torch.Tensor:
        """Returns: Tensor[N] bool, True for boxes inside ``[0, width) x [0, height)`` up to
        ``boundary_threshold`` pixels; ``box_size`` is ``(height, width)``."""
        height, width = box_size
        t = self.tensor
        return (
            (t[..., 0] >= -boundary_threshold)
            & (t[..., 1] >= -boundary_threshold)
            & (t[..., 2] < width + boundary_threshold)
            & (t[..., 3] < height + boundary_threshold)
        )

    def get_centers(self) -> torch.Tensor:
        """Returns: Tensor[N, 2], box centers ``(x, y)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale x coordinates by ``scale_x`` and y coordinates by ``scale_y`` (in place)."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    @classmethod
    def cat(cls, boxes_list: Sequence[Boxes]) -> Boxes:
        """Concatenate a list of Boxes; an empty list gives an empty Boxes."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat: boxes_list must be a list or tuple, got {type(boxes_list).__name__}")
        if len(boxes_list) == 0:
            return cls(torch.empty(0))
        bad = [type(b).__name__ for b in boxes_list if not isinstance(b, Boxes)]
        if bad:
            raise TypeError(f"Boxes.cat: every element of boxes_list must be Boxes, got {bad}")
        return type(boxes_list[0])._wrap(torch.cat([b.tensor for b in boxes_list], dim=0))

    def __getitem__(self, item: int | slice | torch.Tensor | Sequence[int]) -> Boxes:
        """``boxes[3]`` (Boxes of one box), ``boxes[2:10]``, ``boxes[bool_mask]``, ``boxes[index_tensor]``.

        The result may share storage with this Boxes, following torch indexing.
        """
        if isinstance(item, (int, np.integer)):
            return self._wrap(self.tensor[int(item)].view(1, -1))
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(
                f"Boxes: indexing with {item!r} did not give a [K, 4] matrix (got {list(b.shape)})"
            )
        return self._wrap(b)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return "Boxes(" + str(self.tensor) + ")"

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield one box at a time as ``Tensor[4]``."""
        yield from self.tensor


def _box_tensor(boxes: Any, name: str) -> torch.Tensor:
    if isinstance(boxes, Boxes):
        return boxes.tensor
    if isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[-1] == 4:
        return boxes
    raise TypeError(f"{name} must be Boxes or a Tensor[N, 4], got {type(boxes).__name__}")


def pairwise_intersection(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection area of every pair.

    Returns:
        Tensor[N, M]
    """
    b1 = _box_tensor(boxes1, "boxes1")
    b2 = _box_tensor(boxes2, "boxes2")
    wh = torch.min(b1[:, None, 2:], b2[:, 2:]) - torch.max(b1[:, None, :2], b2[:, :2])
    wh.clamp_(min=0)
    return wh.prod(dim=2)


def _iou_block(
    b1: torch.Tensor, b2: torch.Tensor, area1: torch.Tensor, area2: torch.Tensor, ioa: bool
) -> torch.Tensor:
    """IoU (or IoA over boxes2) of b1 [n, 4] vs b2 [m, 4] without [n, m, 2] temporaries.

    When ``inter > 0`` both boxes are proper and ``union >= inter > 0``; when ``inter == 0`` the result
    must be 0 whatever the union (0 for two empty boxes, negative for inverted ones). Clamping the
    denominator to the smallest positive normal number gives exactly that without a ``where``.
    """
    w = torch.minimum(b1[:, None, 2], b2[None, :, 2]).sub_(torch.maximum(b1[:, None, 0], b2[None, :, 0]))
    h = torch.minimum(b1[:, None, 3], b2[None, :, 3]).sub_(torch.maximum(b1[:, None, 1], b2[None, :, 1]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    tiny = torch.finfo(inter.dtype).tiny
    if ioa:
        return inter.div_(area2.clamp(min=tiny)[None, :])
    union = torch.add(area1[:, None], area2[None, :], out=h).sub_(inter).clamp_(min=tiny)
    return inter.div_(union)


def _native_box_iou() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``detcore.ops.box_iou`` when the installed detcore-ops has it (looked up on each call, it is cheap)."""
    try:
        from detcore.ops import box_iou
    except ImportError:
        return None
    return box_iou


def _pairwise_ratio(boxes1: Any, boxes2: Any, ioa: bool) -> torch.Tensor:
    b1 = _box_tensor(boxes1, "boxes1")
    b2 = _box_tensor(boxes2, "boxes2")
    if b1.device != b2.device:
        raise ValueError(f"boxes1 and boxes2 must be on one device, got {b1.device} and {b2.device}")
    dtype = torch.promote_types(b1.dtype, b2.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    b1 = b1.to(dtype)
    b2 = b2.to(dtype)
    n, m = b1.shape[0], b2.shape[0]
    if not ioa and b1.device.type == "cpu" and not _is_tracing() and n * m > _NATIVE_MIN_ELEMENTS:
        native = _native_box_iou()
        if native is not None:
            # one parallel native loop: same values (detectron2 semantics), no temporaries, and it keeps
            # its speed when the CPU is shared, where a dozen elementwise torch kernels do not
            return native(b1, b2)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    if b1.device.type != "cpu" or _is_tracing() or n * m <= _IOU_BLOCK_ELEMENTS or n == 0 or m == 0:
        return _iou_block(b1, b2, area1, area2, ioa)
    out = torch.empty((n, m), dtype=dtype, device=b1.device)
    if m >= _IOU_BLOCK_ELEMENTS:
        # few rows, many columns: block over columns
        for j in range(0, m, _IOU_BLOCK_ELEMENTS):
            j1 = min(j + _IOU_BLOCK_ELEMENTS, m)
            out[:, j:j1] = _iou_block(b1, b2[j:j1], area1, area2[j:j1], ioa)
        return out
    rows = max(1, _IOU_BLOCK_ELEMENTS // m)
    for i in range(0, n, rows):
        i1 = min(i + rows, n)
        out[i:i1] = _iou_block(b1[i:i1], b2, area1[i:i1], area2, ioa)
    return out


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of every pair of boxes (``XYXY_ABS``).

    ``IoU = inter / (area1 + area2 - inter)`` where ``inter > 0``, else 0 (so empty boxes give 0, never NaN).
    Large CPU inputs (float32/float64 or promoted from half) go to the native ``detcore.ops.box_iou``
    (one parallel loop, no temporaries). Otherwise, and on other devices, it is computed with torch
    elementwise ops; on CPU in blocks of 2^22 elements, so the peak memory is the output plus two
    block-sized temporaries.

    Args:
        boxes1 (Boxes | Tensor[N, 4]): first set.
        boxes2 (Boxes | Tensor[M, 4]): second set, on the same device.

    Returns:
        Tensor[N, M]: float (float16/bfloat16 inputs give float32).
    """
    return _pairwise_ratio(boxes1, boxes2, ioa=False)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """Intersection over the area of ``boxes2`` for every pair (0 where the intersection is 0).

    Returns:
        Tensor[N, M]
    """
    return _pairwise_ratio(boxes1, boxes2, ioa=True)


def pairwise_point_box_distance(points: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Distances from each point to the four sides of each box.

    Args:
        points (Tensor[N, 2]): ``(x, y)``.
        boxes (Boxes): M boxes.

    Returns:
        Tensor[N, M, 4]: ``(x - x0, y - y0, x1 - x, y1 - y)``; all positive iff the point is inside.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[-1] != 2:
        shape = list(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"points must be a Tensor[N, 2], got {shape}")
    b = _box_tensor(boxes, "boxes")
    x, y = points.unsqueeze(2).unbind(dim=1)  # [N, 1] each
    x0, y0, x1, y1 = b.unsqueeze(0).unbind(dim=2)  # [1, M] each
    return torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)


def matched_pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (detectron2 semantics: no guard, 0/0 gives NaN).

    Returns:
        Tensor[N]
    """
    b1 = _box_tensor(boxes1, "boxes1")
    b2 = _box_tensor(boxes2, "boxes2")
    if len(b1) != len(b2):
        raise ValueError(f"boxes1 and boxes2 must have the same length, got {len(b1)} and {len(b2)}")
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = torch.max(b1[:, :2], b2[:, :2])
    rb = torch.min(b1[:, 2:], b2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area1 + area2 - inter)
