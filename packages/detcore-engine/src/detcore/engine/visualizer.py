"""Draw predictions (boxes, labels, masks, keypoints) on images with PIL and numpy (no matplotlib)."""

from __future__ import annotations

import colorsys
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from detcore.engine.evaluation._io import atomic_write_bytes

__all__ = ["VisImage", "Visualizer", "color_for"]

_KEYPOINT_THRESHOLD = 0.05
_MASK_ALPHA = 0.5


def color_for(index: int) -> tuple[int, int, int]:
    """A deterministic, well-spread RGB colour for a class (or instance) index.

    Hues step by the golden ratio so that neighbouring indices get distinct colours.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    hue = (index * 0.618033988749895 + 0.1) % 1.0
    sat = 0.65 + 0.25 * ((index // 7) % 2)
    val = 0.95 - 0.2 * ((index // 14) % 2)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def _meta_get(metadata: Any, key: str, default: Any = None) -> Any:
    if metadata is None:
        return default
    if isinstance(metadata, Mapping):
        return metadata.get(key, default)
    return getattr(metadata, key, default)


def _to_numpy(x: Any) -> np.ndarray:
    x = getattr(x, "tensor", x)
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class VisImage:
    """The canvas of a :class:`Visualizer`: an RGB uint8 image [H, W, 3] at the visualizer's scale."""

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        self.scale = scale
        h, w = img.shape[:2]
        self.height, self.width = h, w
        out_size = (max(round(w * scale), 1), max(round(h * scale), 1))
        pil = Image.fromarray(img, mode=None).convert("RGB")
        if out_size != (w, h):
            pil = pil.resize(out_size, Image.Resampling.BILINEAR)
        self._img = pil

    @property
    def pil(self) -> Image.Image:
        return self._img

    def get_image(self) -> np.ndarray:
        """The drawn image as uint8 [H*scale, W*scale, 3] RGB (a copy)."""
        return np.array(self._img, dtype=np.uint8)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image as PNG to ``path`` atomically (parent directories are created)."""
        buf = io.BytesIO()
        self._img.save(buf, format="PNG")
        return atomic_write_bytes(path, buf.getvalue())


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    lum = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if lum > 140 else (255, 255, 255)


def _mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it (image borders count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return mask & ~interior


class Visualizer:
    """Draws on a copy of an RGB image.

    Args:
        img_rgb (ndarray[H, W, 3] uint8): the image, RGB.
        metadata: mapping or object with optional ``thing_classes`` (names by class id), ``thing_colors``
            (RGB 0-255 by class id), ``keypoint_names`` and ``keypoint_connection_rules`` (list of
            ``(name_a, name_b, (r, g, b))``, as detectron2's metadata).
        scale: output size factor; coordinates given to the draw methods are in input-image pixels.
    """

    def __init__(self, img_rgb: np.ndarray | torch.Tensor, metadata: Any = None, scale: float = 1.0):
        img = _to_numpy(img_rgb)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"img_rgb must have shape [H, W, 3] (RGB), got {list(img.shape)}")
        if img.dtype != np.uint8:
            raise TypeError(f"img_rgb must be uint8 (0-255), got dtype {img.dtype}")
        if not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.img = np.ascontiguousarray(img)
        self.metadata = metadata
        self.scale = float(scale)
        self.output = VisImage(self.img, scale=self.scale)
        out_w, out_h = self.output.pil.size
        # in output pixels: readable on small images, growing slowly with the image
        self._font_size = max(10, int(np.sqrt(out_h * out_w) // 40))
        try:
            self._font = ImageFont.load_default(size=self._font_size)
        except TypeError:  # Pillow < 10.1
            self._font = ImageFont.load_default()
        self._line_width = max(round(self._font_size / 8), 1)

    # -- primitives ----------------------------------------------------------------------------------
    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale, y * self.scale

    def draw_box(self, box_xyxy: Sequence[float], color: tuple[int, int, int] = (0, 255, 0)) -> VisImage:
        """Outline of a box [x0, y0, x1, y1] (input pixels)."""
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        draw = ImageDraw.Draw(self.output.pil)
        (a, b), (c, d) = self._xy(x0, y0), self._xy(x1, y1)
        draw.rectangle(
            [min(a, c), min(b, d), max(a, c), max(b, d)], outline=tuple(color), width=self._line_width
        )
        return self.output

    def draw_text(
        self, text: str, position: Sequence[float], color: tuple[int, int, int] = (0, 255, 0)
    ) -> VisImage:
        """``text`` on a filled ``color`` background with its top-left corner at ``position`` (input pixels)."""
        draw = ImageDraw.Draw(self.output.pil)
        x, y = self._xy(float(position[0]), float(position[1]))
        left, top, right, bottom = draw.textbbox((x, y), text, font=self._font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=tuple(color))
        draw.text((x, y), text, fill=_text_color(tuple(color)), font=self._font)
        return self.output

    def draw_binary_mask(
        self,
        mask: np.ndarray | torch.Tensor,
        color: tuple[int, int, int] = (0, 255, 0),
        alpha: float = _MASK_ALPHA,
        contour: bool = True,
    ) -> VisImage:
        """Blend ``color`` over the pixels of ``mask`` (bool [H, W], input size) and outline it."""
        m = _to_numpy(mask).astype(bool)
        if m.shape != self.img.shape[:2]:
            raise ValueError(
                f"mask must have the image's shape {list(self.img.shape[:2])}, got {list(m.shape)}"
            )
        if not m.any():
            return self.output
        out = self.output
        if out.pil.size != (m.shape[1], m.shape[0]):
            m = np.asarray(Image.fromarray(m).resize(out.pil.size, Image.Resampling.NEAREST), dtype=bool)
        arr = np.array(out.pil, dtype=np.float32)
        col = np.asarray(color, dtype=np.float32)
        arr[m] = arr[m] * (1.0 - alpha) + col * alpha
        if contour:
            arr[_mask_boundary(m)] = col
        out._img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="RGB")
        return out

    def draw_and_connect_keypoints(
        self, keypoints: np.ndarray | torch.Tensor, color: tuple[int, int, int] = (0, 255, 0)
    ) -> VisImage:
        """Keypoints [K, 3] (x, y, score): circles where score > 0.05, and the skeleton of the metadata's
        ``keypoint_connection_rules`` between visible keypoints."""
        kpts = _to_numpy(keypoints).astype(np.float64)
        if kpts.ndim != 2 or kpts.shape[1] != 3:
            raise ValueError(f"keypoints must have shape [K, 3] (x, y, score), got {list(kpts.shape)}")
        draw = ImageDraw.Draw(self.output.pil)
        names = _meta_get(self.metadata, "keypoint_names")
        visible: dict[Any, tuple[float, float]] = {}
        for idx, (x, y, prob) in enumerate(kpts):
            if prob > _KEYPOINT_THRESHOLD:
                key = names[idx] if names is not None and idx < len(names) else idx
                visible[key] = self._xy(x, y)
        for rule in _meta_get(self.metadata, "keypoint_connection_rules", None) or []:
            a, b, line_color = rule
            if a in visible and b in visible:
                draw.line(
                    [visible[a], visible[b]], fill=tuple(int(c) for c in line_color), width=self._line_width
                )
        r = max(self._line_width + 1, 2)
        for x, y in visible.values():
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(color))
        return self.output

    # -- high level ----------------------------------------------------------------------------------
    def _class_color(self, cls: int | None, index: int) -> tuple[int, int, int]:
        colors = _meta_get(self.metadata, "thing_colors")
        if cls is not None and colors is not None and 0 <= cls < len(colors):
            return tuple(int(c) for c in colors[cls])  # type: ignore[return-value]
        return color_for(cls if cls is not None else index)

    def draw_instance_predictions(self, predictions: Any) -> VisImage:
        """Draw an ``Instances``' masks (``pred_masks``), boxes (``pred_boxes``), labels ("class 97%" from
        ``pred_classes``, ``scores`` and the metadata's ``thing_classes``) and ``pred_keypoints``.

        Instances are drawn from the largest box to the smallest so small ones stay visible. Empty
        instances leave the image unchanged.
        """
        fields = predictions.get_fields() if hasattr(predictions, "get_fields") else {}
        n = len(predictions) if fields else 0
        if n == 0:
            return self.output
        boxes = _to_numpy(predictions.pred_boxes).reshape(-1, 4) if predictions.has("pred_boxes") else None
        scores = _to_numpy(predictions.scores).reshape(-1) if predictions.has("scores") else None
        classes = (
            _to_numpy(predictions.pred_classes).reshape(-1).astype(np.int64).tolist()
            if predictions.has("pred_classes")
            else None
        )
        masks = _to_numpy(predictions.pred_masks) if predictions.has("pred_masks") else None
        kpts = _to_numpy(predictions.pred_keypoints) if predictions.has("pred_keypoints") else None
        names = _meta_get(self.metadata, "thing_classes")

        order = list(range(n))
        if boxes is not None:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            order = np.argsort(-areas, kind="stable").tolist()
        colors = [self._class_color(classes[i] if classes is not None else None, i) for i in range(n)]

        if masks is not None:
            for i in order:
                self.draw_binary_mask(masks[i], color=colors[i])
        for i in order:
            if boxes is not None:
                self.draw_box(boxes[i], color=colors[i])
            label = None
            if classes is not None:
                c = classes[i]
                label = names[c] if names is not None and 0 <= c < len(names) else str(c)
            if scores is not None:
                pct = f"{float(scores[i]) * 100:.0f}%"
                label = pct if label is None else f"{label} {pct}"
            if label is not None:
                if boxes is not None:
                    pos = (boxes[i, 0], boxes[i, 1])
                elif masks is not None and masks[i].any():
                    ys, xs = np.nonzero(masks[i])
                    pos = (float(xs.min()), float(ys.min()))
                else:
                    pos = None
                if pos is not None:
                    self.draw_text(label, pos, color=colors[i])
        if kpts is not None:
            for i in order:
                self.draw_and_connect_keypoints(kpts[i], color=colors[i])
        return self.output

    def draw_sem_seg(
        self, sem_seg: np.ndarray | torch.Tensor, alpha: float = 0.8, ignore_label: int | None = 255
    ) -> VisImage:
        """Colour every class of a label map (int [H, W], or scores [C, H, W] -> argmax) and name it.

        Colours come from the metadata's ``stuff_colors`` (else :func:`color_for`), names from
        ``stuff_classes`` (else the class id); ``ignore_label`` pixels are left as they are.
        """
        seg = _to_numpy(sem_seg)
        if seg.ndim == 3:
            seg = seg.argmax(axis=0)
        if seg.shape != self.img.shape[:2]:
            raise ValueError(
                f"sem_seg must have shape [H, W] or [C, H, W] with the image's H, W {list(self.img.shape[:2])}, "
                f"got {list(_to_numpy(sem_seg).shape)}"
            )
        names = _meta_get(self.metadata, "stuff_classes")
        colors = _meta_get(self.metadata, "stuff_colors")
        labels, areas = np.unique(seg, return_counts=True)
        for label in labels[np.argsort(-areas, kind="stable")].tolist():
            if ignore_label is not None and label == ignore_label:
                continue
            if label < 0:
                continue
            color = (
                tuple(int(c) for c in colors[label])
                if colors is not None and label < len(colors)
                else color_for(label)
            )
            mask = seg == label
            self.draw_binary_mask(mask, color=color, alpha=alpha, contour=False)
            ys, xs = np.nonzero(mask)
            i = len(ys) // 2
            name = names[label] if names is not None and label < len(names) else str(label)
            self.draw_text(name, (float(xs[i]), float(ys[i])), color=color)
        return self.output

    def get_output(self) -> VisImage:
        return self.output
