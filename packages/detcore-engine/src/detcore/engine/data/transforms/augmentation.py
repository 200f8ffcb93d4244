"""Random augmentations (detectron2's ``Augmentation``): each samples its parameters from the input and
returns a deterministic :class:`~detcore.engine.data.transforms.Transform` (``get_transform``), which is
then applied to the image and every annotation alike.

Randomness comes from ``numpy.random`` (the global generator), so a seeded worker gives a reproducible
stream; the data loader seeds each worker.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from detcore.engine.data.transforms.transform import (
    BlendTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    ResizeTransform,
    RotationTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "AugInput",
    "Augmentation",
    "AugmentationList",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomCrop_CategoryAreaConstraint",
    "RandomFlip",
    "RandomRotation",
    "RandomSaturation",
    "ResizeShortestEdge",
    "apply_augmentations",
]


class AugInput:
    """The inputs an augmentation may look at: ``image (ndarray[H, W, C])``, optional ``boxes
    (ndarray[N, 4])`` XYXY absolute and ``sem_seg (ndarray[H, W])``. :meth:`transform` applies a transform to
    all of them in place."""

    def __init__(
        self, image: np.ndarray, *, boxes: np.ndarray | None = None, sem_seg: np.ndarray | None = None
    ):
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError(
                f"AugInput: image must be an ndarray of shape [H, W] or [H, W, C], got "
                f"{getattr(image, 'shape', type(image).__name__)}"
            )
        self.image = image
        self.boxes = boxes
        self.sem_seg = sem_seg

    def transform(self, tfm: Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = tfm.apply_segmentation(self.sem_seg)


class Augmentation:
    """Base class: subclasses implement ``get_transform(image)`` (or with the extra inputs named in
    ``input_args``, e.g. ``("image", "sem_seg")``)."""

    input_args: tuple[str, ...] = ("image",)

    def get_transform(self, *args) -> Transform:
        raise NotImplementedError

    def __call__(self, aug_input: AugInput) -> Transform:
        args = [getattr(aug_input, name) for name in self.input_args]
        tfm = self.get_transform(*args)
        if not isinstance(tfm, Transform):
            raise TypeError(
                f"{type(self).__name__}.get_transform must return a Transform, got {type(tfm).__name__}"
            )
        aug_input.transform(tfm)
        return tfm

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({attrs})"


class AugmentationList(Augmentation):
    """Apply augmentations in order; each sees the output of the previous one."""

    def __init__(self, augs: Sequence[Augmentation | Transform]):
        self.augs = list(augs)

    def __call__(self, aug_input: AugInput) -> TransformList:
        tfms = []
        for aug in self.augs:
            if isinstance(aug, Transform):
                aug_input.transform(aug)
                tfms.append(aug)
            else:
                tfms.append(aug(aug_input))
        return TransformList(tfms)


def apply_augmentations(augmentations: Sequence[Augmentation | Transform], image: np.ndarray):
    """Apply ``augmentations`` to ``image (ndarray[H, W, C])``; returns ``(new_image, TransformList)``."""
    aug_input = AugInput(image)
    tfms = AugmentationList(augmentations)(aug_input)
    return aug_input.image, tfms


def _check_range(name: str, lo: float, hi: float) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name}: expected a finite range with min <= max, got ({lo}, {hi})")


class ResizeShortestEdge(Augmentation):
    """Resize so that the short edge is ``short_edge_length`` (one value sampled: uniformly in
    ``[min, max]`` for ``sample_style="range"``, from the list for ``"choice"``) unless the long edge would
    exceed ``max_size``, in which case the long edge becomes ``max_size``. Bilinear by default."""

    def __init__(
        self,
        short_edge_length: int | Sequence[int],
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp: str = "bilinear",
    ):
        if sample_style not in ("range", "choice"):
            raise ValueError(
                f"ResizeShortestEdge: sample_style must be 'range' or 'choice', got {sample_style!r}"
            )
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(
                f"ResizeShortestEdge: short_edge_length must be (min, max) for sample_style='range', "
                f"got {short_edge_length}"
            )
        if len(short_edge_length) == 0 or min(short_edge_length) < 0:
            raise ValueError(
                f"ResizeShortestEdge: short_edge_length must be non-negative, got {short_edge_length}"
            )
        self.short_edge_length = short_edge_length
        self.max_size = int(max_size)
        self.sample_style = sample_style
        self.interp = interp
        self.is_range = sample_style == "range"

    @staticmethod
    def get_output_shape(oldh: int, oldw: int, short_edge_length: int, max_size: int) -> tuple[int, int]:
        """``(newh, neww)`` as detectron2 computes it (scale the short edge, cap the long edge, round)."""
        h, w = oldh, oldw
        size = short_edge_length * 1.0
        scale = size / min(h, w)
        if h < w:
            newh, neww = size, scale * w
        else:
            newh, neww = scale * h, size
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh = newh * scale
            neww = neww * scale
        return int(newh + 0.5), int(neww + 0.5)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.is_range:
            size = np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1)
        else:
            size = np.random.choice(self.short_edge_length)
        if size == 0:
            return NoOpTransform()
        newh, neww = self.get_output_shape(h, w, int(size), self.max_size)
        return ResizeTransform(h, w, newh, neww, self.interp)


class RandomFlip(Augmentation):
    """Flip horizontally (default) or vertically with probability ``prob``."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip: exactly one of horizontal and vertical must be True")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomFlip: prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.horizontal = horizontal
        self.vertical = vertical

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if np.random.uniform() < self.prob:
            return HFlipTransform(w) if self.horizontal else VFlipTransform(h)
        return NoOpTransform()


class RandomCrop(Augmentation):
    """Crop a random window. ``crop_type``:

    * ``"relative"``: ``crop_size = (h_frac, w_frac)`` of the image size;
    * ``"relative_range"``: fractions sampled uniformly in ``[crop_size, 1]``;
    * ``"absolute"``: ``crop_size = (h, w)`` pixels (clamped to the image);
    * ``"absolute_range"``: ``crop_size = (min, max)`` pixels, each side sampled in ``[min, min(max, side)]``.
    """

    _TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in self._TYPES:
            raise ValueError(f"RandomCrop: crop_type must be one of {self._TYPES}, got {crop_type!r}")
        if len(crop_size) != 2:
            raise ValueError(f"RandomCrop: crop_size must have 2 values, got {crop_size!r}")
        if crop_type.startswith("relative") and not all(0 < c <= 1 for c in crop_size):
            raise ValueError(f"RandomCrop: relative crop_size must be in (0, 1], got {crop_size!r}")
        if crop_type.startswith("absolute") and not all(c > 0 for c in crop_size):
            raise ValueError(f"RandomCrop: absolute crop_size must be positive, got {crop_size!r}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def get_crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(crop_h, crop_w)`` for an image of ``(h, w)``."""
        h, w = image_size
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            crop_size = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = crop_size + np.random.rand(2) * (1 - crop_size)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        lo, hi = int(self.crop_size[0]), int(self.crop_size[1])
        if lo > hi:
            raise ValueError(f"RandomCrop: absolute_range crop_size must be (min, max), got {self.crop_size}")
        ch = np.random.randint(min(h, lo), min(h, hi) + 1)
        cw = np.random.randint(min(w, lo), min(w, hi) + 1)
        return int(ch), int(cw)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        croph, cropw = self.get_crop_size((h, w))
        h0 = np.random.randint(h - croph + 1)
        w0 = np.random.randint(w - cropw + 1)
        return CropTransform(w0, h0, cropw, croph)


class RandomCrop_CategoryAreaConstraint(Augmentation):
    """:class:`RandomCrop` that retries (up to 10 times) until no single semantic category covers more than
    ``single_category_max_area`` of the crop (``ignored_category`` not counted), like detectron2.

    Instance-aware option: with ``min_instances > 0`` the candidate crop must additionally contain the
    centre of at least that many boxes (the ``boxes`` of the :class:`AugInput`).
    """

    input_args = ("image", "sem_seg", "boxes")

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float = 1.0,
        ignored_category: int | None = None,
        min_instances: int = 0,
    ):
        self.crop_aug = RandomCrop(crop_type, crop_size)
        self.single_category_max_area = float(single_category_max_area)
        self.ignored_category = ignored_category
        self.min_instances = int(min_instances)

    def _ok(self, sem_seg, boxes, y0, x0, croph, cropw) -> bool:
        if sem_seg is not None and self.single_category_max_area < 1.0:
            crop = sem_seg[y0 : y0 + croph, x0 : x0 + cropw]
            labels, cnt = np.unique(crop, return_counts=True)
            if self.ignored_category is not None:
                cnt = cnt[labels != self.ignored_category]
            if not (len(cnt) > 1 and np.max(cnt) < np.sum(cnt) * self.single_category_max_area):
                return False
        if self.min_instances > 0 and boxes is not None and len(boxes) > 0:
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            inside = (cx >= x0) & (cx < x0 + cropw) & (cy >= y0) & (cy < y0 + croph)
            if inside.sum() < min(self.min_instances, len(b)):
                return False
        return True

    def get_transform(self, image: np.ndarray, sem_seg=None, boxes=None) -> Transform:
        h, w = image.shape[:2]
        if self.single_category_max_area >= 1.0 and self.min_instances == 0:
            return self.crop_aug.get_transform(image)
        croph, cropw = self.crop_aug.get_crop_size((h, w))
        for _ in range(10):
            y0 = np.random.randint(h - croph + 1)
            x0 = np.random.randint(w - cropw + 1)
            if self._ok(sem_seg, boxes, y0, x0, croph, cropw):
                break
        return CropTransform(x0, y0, cropw, croph)


class RandomBrightness(Augmentation):
    """Multiply the image by ``w ~ U[intensity_min, intensity_max]`` (``w * image``)."""

    def __init__(self, intensity_min: float, intensity_max: float):
        _check_range("RandomBrightness", intensity_min, intensity_max)
        self.intensity_min, self.intensity_max = float(intensity_min), float(intensity_max)

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=0.0, src_weight=1 - w, dst_weight=w)


class RandomContrast(Augmentation):
    """Blend with the image mean: ``(1 - w) * mean + w * image``, ``w ~ U[min, max]``."""

    def __init__(self, intensity_min: float, intensity_max: float):
        _check_range("RandomContrast", intensity_min, intensity_max)
        self.intensity_min, self.intensity_max = float(intensity_min), float(intensity_max)

    def get_transform(self, image: np.ndarray) -> Transform:
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        return BlendTransform(src_image=float(image.mean()), src_weight=1 - w, dst_weight=w)


class RandomSaturation(Augmentation):
    """Blend with the grayscale image: ``(1 - w) * gray + w * image``, ``w ~ U[min, max]``. ``image_format``
    ("BGR" or "RGB") picks the channel weights of the grayscale (0.299 R + 0.587 G + 0.114 B)."""

    def __init__(self, intensity_min: float, intensity_max: float, image_format: str = "BGR"):
        _check_range("RandomSaturation", intensity_min, intensity_max)
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"RandomSaturation: image_format must be 'BGR' or 'RGB', got {image_format!r}")
        self.intensity_min, self.intensity_max = float(intensity_min), float(intensity_max)
        self.image_format = image_format

    def get_transform(self, image: np.ndarray) -> Transform:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"RandomSaturation: image must have shape [H, W, 3], got {tuple(image.shape)}")
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if self.image_format == "BGR":
            weights = weights[::-1]
        gray = (image.astype(np.float32) * weights).sum(axis=2, keepdims=True)
        return BlendTransform(src_image=gray, src_weight=1 - w, dst_weight=w)


class RandomRotation(Augmentation):
    """Rotate by an angle (degrees, counter-clockwise) sampled uniformly in ``angle = [min, max]``
    (``sample_style="range"``) or from the list (``"choice"``); ``expand`` keeps the whole image."""

    def __init__(
        self,
        angle: float | Sequence[float],
        expand: bool = True,
        center: Sequence[float] | None = None,
        sample_style: str = "range",
        interp: str = "bilinear",
    ):
        if sample_style not in ("range", "choice"):
            raise ValueError(
                f"RandomRotation: sample_style must be 'range' or 'choice', got {sample_style!r}"
            )
        if isinstance(angle, (float, int)):
            angle = (angle, angle)
        self.angle = tuple(float(a) for a in angle)
        if sample_style == "range" and len(self.angle) != 2:
            raise ValueError(
                f"RandomRotation: angle must be (min, max) for sample_style='range', got {angle}"
            )
        self.expand = expand
        self.center = center
        self.sample_style = sample_style
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            angle = np.random.uniform(self.angle[0], self.angle[1])
        else:
            angle = float(np.random.choice(self.angle))
        if angle % 360 == 0:
            return NoOpTransform()
        return RotationTransform(h, w, angle, expand=self.expand, center=self.center, interp=self.interp)
