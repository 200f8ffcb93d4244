"""The built-in synthetic "shapes" dataset: circles, squares and triangles on noisy coloured backgrounds,
written as real PNG files plus one COCO json per split, with boxes, polygon masks and 4 keypoints.

Layout under ``root``::

    manifest.json                       generation parameters (reuse check)
    train/000001.png ...                images of split "train" (likewise "val")
    annotations/instances_train.json    COCO instances + keypoints json (likewise val)

Per image (``image_size = (w, h)``, default 320x256): a smooth random colour field plus pixel noise, and
1-4 filled shapes of circumradius 14-56 px at a random rotation and colour (drawn so that they lie inside
the image). Categories: 1 circle (a 32-gon), 2 square, 3 triangle. Later shapes occlude earlier ones; a
new shape is re-drawn (up to 20 tries, then left out) if it would leave an earlier instance less than 30%
visible, so no annotated instance is more than ~70% occluded and every visible shape is annotated.

Annotations: ``segmentation`` is the FULL shape polygon (not the visible part); ``bbox`` and ``area`` are
computed from that polygon. ``keypoints`` (COCO convention: stored ``x - 0.5, y - 0.5`` so that loaders
adding 0.5 get the exact vertex): squares and triangles their vertices in counter-clockwise order starting
at the rotation angle, triangles padding the 4th as ``(0, 0, 0)``; circles their 4 extreme points in the
order left, top, right, bottom. Visibility 2, or 1 where the point lies inside a later (occluding) shape.
The flip map ``[("k0", "k2")]`` swaps left and right of circles under a horizontal flip (for squares and
triangles, whose vertex labels follow the random rotation, no labelling is flip-consistent).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES_CATEGORIES",
    "SHAPES_KEYPOINT_FLIP_MAP",
    "SHAPES_KEYPOINT_NAMES",
    "default_shapes_root",
    "make_shapes_dataset",
    "shapes_metadata",
    "shapes_train_factory",
    "shapes_val_factory",
]

_VERSION = 1
SHAPES_CATEGORIES = [
    {"id": 1, "name": "circle"},
    {"id": 2, "name": "square"},
    {"id": 3, "name": "triangle"},
]
SHAPES_KEYPOINT_NAMES = ["k0", "k1", "k2", "k3"]
SHAPES_KEYPOINT_FLIP_MAP = [("k0", "k2")]
_MIN_VISIBLE = 0.3


def default_shapes_root() -> Path:
    """``$DETCORE_DATA/shapes`` if ``DETCORE_DATA`` is set, else ``~/.cache/detcore/shapes``."""
    base = os.environ.get("DETCORE_DATA")
    return Path(base) / "shapes" if base else Path.home() / ".cache" / "detcore" / "shapes"


def _shape_polygon(cat: int, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    """Vertices ``ndarray[k, 2]`` of the shape (continuous coordinates)."""
    if cat == 1:
        a = 2 * math.pi * np.arange(32) / 32
    elif cat == 2:
        a = theta + math.pi / 2 * np.arange(4)
    else:
        a = theta + 2 * math.pi / 3 * np.arange(3)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _keypoints(cat: int, cx: float, cy: float, r: float, poly: np.ndarray) -> np.ndarray:
    """``ndarray[4, 2]`` keypoint positions; the triangle's 4th is NaN (not labeled)."""
    if cat == 1:
        return np.array([[cx - r, cy], [cx, cy - r], [cx + r, cy], [cx, cy + r]])
    if cat == 2:
        return poly.copy()
    return np.concatenate([poly, np.full((1, 2), np.nan)])


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Strictly-inside test of ``points (ndarray[N, 2])`` against a convex counter-clockwise-or-clockwise
    polygon ``poly (ndarray[k, 2])`` (all our shapes are convex)."""
    a = poly
    b = np.roll(poly, -1, axis=0)
    cross = (b[None, :, 0] - a[None, :, 0]) * (points[:, None, 1] - a[None, :, 1]) - (
        b[None, :, 1] - a[None, :, 1]
    ) * (points[:, None, 0] - a[None, :, 0])
    return np.all(cross > 1e-9, axis=1) | np.all(cross < -1e-9, axis=1)


def _raster(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    # PIL puts pixel centres at integer coordinates; ours are at i + 0.5
    ImageDraw.Draw(img).polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in poly], fill=1)
    return np.asarray(img, dtype=bool)


def _make_image(rng: np.random.Generator, w: int, h: int):
    """One image (``ndarray[h, w, 3]`` uint8 RGB) and its instance list."""
    base = rng.uniform(30, 225, size=3)
    coarse = rng.normal(0, 25, size=(5, 6, 3))
    field = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
        dtype=np.float32,
    )
    background = base[None, None, :] + (field - 128)
    instances: list[dict] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 5))):
        for _try in range(20):
            cat = int(rng.integers(1, 4))
            r = float(rng.uniform(14, 56))
            cx = float(rng.uniform(r + 1, w - r - 1))
            cy = float(rng.uniform(r + 1, h - r - 1))
            theta = float(rng.uniform(0, 2 * math.pi))
            color = rng.uniform(0, 255, size=3)
            for _c in range(20):
                if np.abs(color - base).sum() >= 150:
                    break
                color = rng.uniform(0, 255, size=3)
            poly = _shape_polygon(cat, cx, cy, r, theta)
            mask = _raster(poly, w, h)
            # visibility of earlier instances if this one is added on top
            ok = True
            for inst, m in zip(instances, masks):
                vis = inst["visible"] & ~mask
                if vis.sum() < _MIN_VISIBLE * m.sum():
                    ok = False
                    break
            if ok:
                for inst in instances:
                    inst["visible"] = inst["visible"] & ~mask
                instances.append(
                    {
                        "cat": cat,
                        "cx": cx,
                        "cy": cy,
                        "r": r,
                        "poly": poly,
                        "color": color,
                        "visible": mask.copy(),
                    }
                )
                masks.append(mask)
                break
    img = background.copy()
    for inst, m in zip(instances, masks):
        img[m] = inst["color"]
    img = img + rng.normal(0, 4, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), instances


def _annotations(instances: list[dict], image_id: int, first_ann_id: int) -> list[dict]:
    anns = []
    for i, inst in enumerate(instances):
        poly = inst["poly"]
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        xs, ys = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        kps = _keypoints(inst["cat"], inst["cx"], inst["cy"], inst["r"], poly)
        later = [other["poly"] for other in instances[i + 1 :]]
        flat: list[float] = []
        for p in kps:
            if np.isnan(p[0]):
                flat += [0.0, 0.0, 0]
                continue
            occluded = any(bool(_inside(p[None], q)[0]) for q in later)
            flat += [round(float(p[0]) - 0.5, 3), round(float(p[1]) - 0.5, 3), 1 if occluded else 2]
        anns.append(
            {
                "id": first_ann_id + i,
                "image_id": image_id,
                "category_id": inst["cat"],
                "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": round(area, 3),
                "segmentation": [[round(float(v), 3) for v in poly.reshape(-1)]],
                "iscrowd": 0,
                "keypoints": flat,
                "num_keypoints": sum(1 for v in flat[2::3] if v > 0),
            }
        )
    return anns


def _write_split(root: Path, split: str, num: int, seed: int, w: int, h: int) -> None:
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id in range(1, num + 1):
        img, instances = _make_image(rng, w, h)
        name = f"{image_id:06d}.png"
        Image.fromarray(img).save(root / split / name, compress_level=1)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        anns += _annotations(instances, image_id, len(anns) + 1)
    categories = [
        {**c, "supercategory": "shape", "keypoints": list(SHAPES_KEYPOINT_NAMES), "skeleton": []}
        for c in SHAPES_CATEGORIES
    ]
    out = root / "annotations" / f"instances_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    tmp.replace(out)


def make_shapes_dataset(
    root: str | os.PathLike | None = None,
    num_train: int = 600,
    num_val: int = 100,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 256),
) -> dict[str, tuple[Path, Path]]:
    """Write the shapes dataset under ``root`` (default :func:`default_shapes_root`) and return
    ``{split: (json_file, image_root)}``. Deterministic given the arguments; idempotent: when
    ``manifest.json`` records the same arguments and all files exist, nothing is written.

    Args:
        image_size: ``(w, h)`` of every image; each side must be >= 128 (room for the largest shape).
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(
            f"make_shapes_dataset: num_train and num_val must be >= 0, got {num_train}, {num_val}"
        )
    if len(image_size) != 2 or min(image_size) < 128:
        raise ValueError(f"make_shapes_dataset: image_size must be (w, h) with both >= 128, got {image_size}")
    root = Path(root) if root is not None else default_shapes_root()
    w, h = int(image_size[0]), int(image_size[1])
    manifest = {
        "version": _VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
        "image_size": [w, h],
    }
    splits = {"train": num_train, "val": num_val}
    result = {s: (root / "annotations" / f"instances_{s}.json", root / s) for s in splits}
    mpath = root / "manifest.json"
    if mpath.is_file():
        try:
            same = json.loads(mpath.read_text()) == manifest
        except json.JSONDecodeError:
            same = False
        if same and all(
            result[s][0].is_file() and all((root / s / f"{i:06d}.png").is_file() for i in range(1, n + 1))
            for s, n in splits.items()
        ):
            return result
        mpath.unlink()
    root.mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        _write_split(root, split, n, seed, w, h)
    mpath.write_text(json.dumps(manifest))
    return result


def shapes_metadata(split: str, root: str | os.PathLike | None = None) -> dict:
    """Metadata dict of split ``"train"`` or ``"val"``."""
    root = Path(root) if root is not None else default_shapes_root()
    return {
        "thing_classes": [c["name"] for c in SHAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)},
        "keypoint_names": list(SHAPES_KEYPOINT_NAMES),
        "keypoint_flip_map": list(SHAPES_KEYPOINT_FLIP_MAP),
        "evaluator_type": "coco",
        "json_file": str(root / "annotations" / f"instances_{split}.json"),
        "image_root": str(root / split),
    }


def _load_split(split: str, root: Path) -> list[dict]:
    from detcore.engine.data.coco import load_coco_json

    paths = make_shapes_dataset(root)
    json_file, image_root = paths[split]
    return load_coco_json(json_file, image_root)


def _factory(split: str):
    root = default_shapes_root()
    return functools.partial(_load_split, split, root), shapes_metadata(split, root)


def shapes_train_factory():
    """Plugin factory of dataset ``"shapes_train"``: ``(loader, metadata)`` (generated on first load)."""
    return _factory("train")


def shapes_val_factory():
    """Plugin factory of dataset ``"shapes_val"``: ``(loader, metadata)`` (generated on first load)."""
    return _factory("val")
