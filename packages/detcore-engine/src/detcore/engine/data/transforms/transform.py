"""Deterministic transforms (detectron2's ``Transform``): each applies the same geometric or photometric
change to an image, its coordinates, boxes, polygons and segmentation masks.

Conventions: images are ``ndarray[H, W, C]`` (uint8 or float) or ``ndarray[H, W]``; coordinates are
continuous pixel coordinates where the image covers ``[0, W] x [0, H]`` (pixel ``i`` spans ``[i, i + 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BlendTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "ResizeTransform",
    "RotationTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
]


class Transform:
    """A deterministic transform. Subclasses implement :meth:`apply_image` and :meth:`apply_coords`; boxes,
    polygons and segmentations are derived from them unless overridden."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """coords (ndarray[N, 2]): ``(x, y)`` absolute; returns the transformed ``ndarray[N, 2]``."""
        raise NotImplementedError

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """segmentation (ndarray[H, W]): label or binary mask; nearest-neighbour where resampled."""
        return self.apply_image(segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        """box (ndarray[N, 4]): XYXY absolute; the axis-aligned box around the 4 transformed corners."""
        box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        idxs = np.array([(0, 1), (2, 1), (0, 3), (2, 3)]).flatten()
        coords = box[:, idxs].reshape(-1, 2)
        coords = self.apply_coords(coords).reshape(-1, 4, 2)
        minxy = coords.min(axis=1)
        maxxy = coords.max(axis=1)
        return np.concatenate((minxy, maxxy), axis=1)

    def apply_polygons(self, polygons: list[np.ndarray]) -> list[np.ndarray]:
        """polygons (list[ndarray[k, 2]]): each polygon's vertices; returns the transformed list."""
        return [self.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)) for p in polygons]

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, np.ndarray))
        return f"{type(self).__name__}({attrs})"


class NoOpTransform(Transform):
    """The identity."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


class TransformList(Transform):
    """A sequence of transforms applied in order."""

    def __init__(self, transforms: Iterable[Transform]):
        flat: list[Transform] = []
        for t in transforms:
            if isinstance(t, TransformList):
                flat.extend(t.transforms)
            elif isinstance(t, Transform):
                flat.append(t)
            else:
                raise TypeError(
                    f"TransformList: transforms must be Transform objects, got {type(t).__name__}"
                )
        self.transforms = flat

    def _apply(self, name: str, x):
        for t in self.transforms:
            x = getattr(t, name)(x)
        return x

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._apply("apply_image", img)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return self._apply("apply_coords", coords)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._apply("apply_segmentation", segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        return self._apply("apply_box", box)

    def apply_polygons(self, polygons: list[np.ndarray]) -> list[np.ndarray]:
        return self._apply("apply_polygons", polygons)

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"TransformList([{', '.join(repr(t) for t in self.transforms)}])"


class HFlipTransform(Transform):
    """Horizontal flip of an image of width ``width``: ``x -> width - x``."""

    def __init__(self, width: int):
        self.width = int(width)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype == np.uint8:
            # torch's flip is several times faster than numpy's strided copy for [H, W, 3] uint8
            return _as_torch(img).flip(1).numpy()
        return np.ascontiguousarray(img[:, ::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64).reshape(-1, 2)
        coords[:, 0] = self.width - coords[:, 0]
        return coords


class VFlipTransform(Transform):
    """Vertical flip of an image of height ``height``: ``y -> height - y``."""

    def __init__(self, height: int):
        self.height = int(height)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64).reshape(-1, 2)
        coords[:, 1] = self.height - coords[:, 1]
        return coords


_INTERP = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    Image.NEAREST: Image.NEAREST,
    Image.BILINEAR: Image.BILINEAR,
    Image.BICUBIC: Image.BICUBIC,
}


def _as_torch(img: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``img``'s memory (copied first if ``img`` is read-only, e.g. from PIL)."""
    return torch.from_numpy(img if img.flags.writeable else np.array(img))


def _pil_apply(img: np.ndarray, fn, interp) -> np.ndarray:
    """Apply a PIL operation channel-safely to a uint8 image (any channel count) or a float/int mask."""
    if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
        squeeze = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(img[:, :, 0] if squeeze else img)
        out = np.array(fn(pil, interp))
        return out[:, :, None] if squeeze else out
    # other dtypes / channel counts: one float32 ("F" mode) plane at a time
    planes = img[:, :, None] if img.ndim == 2 else img
    outs = [
        np.asarray(fn(Image.fromarray(planes[:, :, c].astype(np.float32), mode="F"), interp))
        for c in range(planes.shape[2])
    ]
    out = np.stack(outs, axis=2).astype(img.dtype)
    return out[:, :, 0] if img.ndim == 2 else out


class ResizeTransform(Transform):
    """Resize from ``(h, w)`` to ``(new_h, new_w)``; coordinates scale by ``new_w / w`` and ``new_h / h``.

    Images use ``interp`` ("bilinear" default, PIL); segmentations use nearest neighbour.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp="bilinear"):
        self.h, self.w, self.new_h, self.new_w = int(h), int(w), int(new_h), int(new_w)
        if interp not in _INTERP:
            raise ValueError(
                f"ResizeTransform: interp must be one of 'nearest', 'bilinear', 'bicubic', got {interp!r}"
            )
        self.interp = interp

    def _resize(self, img: np.ndarray, interp) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform: image must have shape ({self.h}, {self.w}, ...), got {tuple(img.shape)}"
            )
        return _pil_apply(img, lambda pil, i: pil.resize((self.new_w, self.new_h), _INTERP[i]), interp)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if (
            img.dtype == np.uint8
            and img.ndim == 3
            and self.interp in ("bilinear", "bicubic", Image.BILINEAR, Image.BICUBIC)
        ):
            # torchvision's uint8 kernels (antialiased like PIL: identical when upsampling, within 1 grey
            # level otherwise) are ~4x faster than PIL's
            from torchvision.transforms.v2 import InterpolationMode
            from torchvision.transforms.v2 import functional as TF

            if img.shape[:2] != (self.h, self.w):
                raise ValueError(
                    f"ResizeTransform: image must have shape ({self.h}, {self.w}, ...), got {tuple(img.shape)}"
                )
            mode = (
                InterpolationMode.BILINEAR
                if self.interp in ("bilinear", Image.BILINEAR)
                else InterpolationMode.BICUBIC
            )
            out = TF.resize(
                _as_torch(img).permute(2, 0, 1), [self.new_h, self.new_w], interpolation=mode, antialias=True
            )
            return np.ascontiguousarray(out.permute(1, 2, 0).numpy())
        return self._resize(img, self.interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._resize(segmentation, "nearest")

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64).reshape(-1, 2)
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords


class CropTransform(Transform):
    """Crop the window ``[x0, x0 + w) x [y0, y0 + h)``; coordinates shift by ``(-x0, -y0)``."""

    def __init__(self, x0: int, y0: int, w: int, h: int):
        self.x0, self.y0, self.w, self.h = int(x0), int(y0), int(w), int(h)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64).reshape(-1, 2)
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def apply_polygons(self, polygons: list[np.ndarray]) -> list[np.ndarray]:
        """Shift the polygons and clip them to the window (Sutherland-Hodgman against the rectangle
        ``[0, w] x [0, h]``); polygons left with fewer than 3 vertices or no area are dropped."""
        out = []
        for p in super().apply_polygons(polygons):
            clipped = _clip_polygon(p, self.w, self.h)
            if len(clipped) >= 3 and _area(clipped) > 0:
                out.append(clipped)
        return out


def _area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _clip_polygon(poly: np.ndarray, w: float, h: float) -> np.ndarray:
    """Clip ``poly (ndarray[k, 2])`` to the rectangle ``[0, w] x [0, h]`` (Sutherland-Hodgman)."""
    # each edge of the window: (axis, bound, keep_if_less_or_equal)
    pts = [tuple(v) for v in np.asarray(poly, dtype=np.float64)]
    for axis, bound, keep_le in ((0, 0.0, False), (0, float(w), True), (1, 0.0, False), (1, float(h), True)):
        if not pts:
            break

        def inside(q, axis=axis, bound=bound, keep_le=keep_le):
            return q[axis] <= bound if keep_le else q[axis] >= bound

        new = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cin, pin = inside(cur), inside(prev)
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
                cross[axis] = bound
                new.append(tuple(cross))
            if cin:
                new.append(cur)
        pts = new
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


class BlendTransform(Transform):
    """Photometric blend ``src_weight * src_image + dst_weight * image`` (clipped to [0, 255] for uint8);
    coordinates and segmentations are unchanged."""

    def __init__(self, src_image: np.ndarray | float, src_weight: float, dst_weight: float):
        self.src_image = src_image
        self.src_weight = float(src_weight)
        self.dst_weight = float(dst_weight)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        out = self.src_weight * np.asarray(self.src_image, dtype=np.float32) + self.dst_weight * img.astype(
            np.float32
        )
        if img.dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class RotationTransform(Transform):
    """Rotate an ``(h, w)`` image by ``angle`` degrees counter-clockwise around ``center`` (``(x, y)``,
    default the image centre). With ``expand`` the output grows to hold the whole rotated image.

    The coordinate map is the affine ``rm`` of OpenCV's ``getRotationMatrix2D`` (plus the expand shift);
    images are resampled with PIL (bilinear; nearest for segmentations), empty area filled with 0.
    """

    def __init__(self, h: int, w: int, angle: float, expand: bool = True, center=None, interp="bilinear"):
        self.h, self.w = int(h), int(w)
        self.angle = float(angle)
        self.expand = bool(expand)
        image_center = np.array((w / 2, h / 2), dtype=np.float64)
        center = image_center if center is None else np.asarray(center, dtype=np.float64)
        self.center = center
        self.interp = interp
        abs_cos, abs_sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        if expand:
            bound_w, bound_h = np.rint([h * abs_sin + w * abs_cos, h * abs_cos + w * abs_sin]).astype(int)
        else:
            bound_w, bound_h = w, h
        self.bound_w, self.bound_h = int(bound_w), int(bound_h)
        self.rm = self._rotation_matrix(center, (self.bound_w / 2, self.bound_h / 2) if expand else None)

    def _rotation_matrix(self, center: np.ndarray, new_center=None) -> np.ndarray:
        a = math.radians(self.angle)
        alpha, beta = math.cos(a), math.sin(a)
        cx, cy = float(center[0]), float(center[1])
        # OpenCV getRotationMatrix2D(center, angle, 1): counter-clockwise in image coordinates (y down)
        rm = np.array(
            [[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]],
            dtype=np.float64,
        )
        if new_center is not None:
            rot_center = rm[:, :2] @ np.array([cx, cy]) + rm[:, 2]
            rm[:, 2] += np.array(new_center) - rot_center
        return rm

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        if coords.size == 0 or self.angle % 360 == 0:
            return coords.copy()
        return coords @ self.rm[:, :2].T + self.rm[:, 2]

    def _warp(self, img: np.ndarray, interp) -> np.ndarray:
        if img.size == 0 or self.angle % 360 == 0:
            return img
        # PIL's AFFINE maps each output pixel centre to an input location: inverse of rm, at pixel centres
        full = np.vstack([self.rm, [0, 0, 1]])
        inv = np.linalg.inv(full)
        # output pixel (i, j) has centre (i + .5, j + .5); input sample at inv @ centre, PIL samples at
        # (a*x + b*y + c) with x, y the output pixel centre, so no extra shift is needed
        data = tuple(inv[:2].reshape(-1))
        size = (self.bound_w, self.bound_h)
        return _pil_apply(
            img, lambda pil, i: pil.transform(size, Image.AFFINE, data, resample=_INTERP[i]), interp
        )

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._warp(img, self.interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._warp(segmentation, "nearest")
