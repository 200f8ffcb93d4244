"""Helpers shared by dataset mappers: read an image, transform annotations with a
:class:`~detcore.engine.data.transforms.Transform`, and turn annotations into
:class:`~detcore.structures.Instances` (detectron2's ``detection_utils``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from detcore.engine.data.transforms import HFlipTransform, Transform, TransformList
from detcore.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    Keypoints,
    PolygonMasks,
    polygons_to_bitmask,
)

__all__ = [
    "annotations_to_instances",
    "check_image_size",
    "create_keypoint_hflip_indices",
    "filter_empty_instances",
    "read_image",
    "rle_to_mask",
    "transform_instance_annotations",
    "transform_keypoint_annotations",
]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed, or uncompressed with a ``counts`` list) to ``ndarray[H, W]`` uint8."""
    from pycocotools import mask as mask_util

    if isinstance(rle.get("counts"), list):
        rle = mask_util.frPyObjects(rle, *rle["size"])
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips numpy 2's __array__(copy=) deprecation; harmless
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_util.decode(rle)


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Read ``file_name`` with PIL as ``ndarray[H, W, 3]`` uint8 in ``format`` ("BGR", "RGB") or
    ``ndarray[H, W, 1]`` for "L". EXIF orientation tags are not applied (pixels as stored)."""
    if format not in ("BGR", "RGB", "L"):
        raise ValueError(f"read_image: format must be 'BGR', 'RGB' or 'L', got {format!r}")
    try:
        with Image.open(os.fspath(file_name)) as img:
            img = img.convert("L" if format == "L" else "RGB")
            arr = np.array(img)  # a writable copy
    except FileNotFoundError as e:
        raise ValueError(f"read_image: image file {file_name!r} does not exist") from e
    except OSError as e:
        raise ValueError(f"read_image: cannot decode image file {file_name!r}: {e}") from e
    if format == "BGR":
        arr = arr[:, :, ::-1]
    elif format == "L":
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Raise ``ValueError`` if the dict's ``height``/``width`` disagree with the image read; fill them in
    when missing."""
    h, w = image.shape[:2]
    if "width" in dataset_dict or "height" in dataset_dict:
        expected = (dataset_dict.get("width", w), dataset_dict.get("height", h))
        if expected != (w, h):
            raise ValueError(
                f"image {dataset_dict.get('file_name')!r} (image id {dataset_dict.get('image_id')}) is "
                f"{w}x{h} (w x h) but its dataset dict says {expected[0]}x{expected[1]}"
            )
    dataset_dict.setdefault("width", w)
    dataset_dict.setdefault("height", h)


def create_keypoint_hflip_indices(
    keypoint_names: Sequence[str], flip_map: Sequence[tuple[str, str]]
) -> np.ndarray:
    """``ndarray[K]`` int: index of the keypoint each keypoint becomes under a horizontal flip."""
    pairs = dict(flip_map)
    pairs.update({v: k for k, v in flip_map})
    unknown = [n for n in pairs if n not in keypoint_names]
    if unknown:
        raise ValueError(f"create_keypoint_hflip_indices: flip_map names {unknown} are not in keypoint_names")
    flipped = [pairs.get(n, n) for n in keypoint_names]
    return np.asarray([list(keypoint_names).index(n) for n in flipped], dtype=np.int64)


def transform_keypoint_annotations(
    keypoints: Sequence[float],
    transforms: Transform,
    image_size: tuple[int, int],
    keypoint_hflip_indices=None,
) -> np.ndarray:
    """Transform flat ``[x, y, v] * K`` keypoints; returns ``ndarray[K, 3]``. After an odd number of
    horizontal flips the keypoints are reordered by ``keypoint_hflip_indices`` (required then, when
    K > 0). Keypoints that end outside the image get visibility 0."""
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    keypoints_xy = transforms.apply_coords(kps[:, :2])
    h, w = image_size
    inside = (keypoints_xy >= np.array([0, 0])) & (keypoints_xy <= np.array([w, h]))
    inside = inside.all(axis=1)
    kps = np.concatenate([keypoints_xy, kps[:, 2:3]], axis=1)
    kps[~inside, 2] = 0
    tlist = transforms.transforms if isinstance(transforms, TransformList) else [transforms]
    do_hflip = sum(isinstance(t, HFlipTransform) for t in tlist) % 2 == 1
    if do_hflip and len(kps) > 0:
        if keypoint_hflip_indices is None:
            raise ValueError(
                "transform_keypoint_annotations: keypoint_hflip_indices is needed to flip keypoints"
            )
        idx = np.asarray(keypoint_hflip_indices, dtype=np.int64)
        if idx.shape != (len(kps),):
            raise ValueError(
                f"transform_keypoint_annotations: keypoint_hflip_indices must have shape [{len(kps)}], "
                f"got {list(idx.shape)}"
            )
        kps = kps[idx]
    kps[kps[:, 2] == 0] = 0  # detectron2: unlabeled keypoints are all-zero
    return kps


def transform_instance_annotations(
    annotation: dict, transforms: Transform, image_size: tuple[int, int], *, keypoint_hflip_indices=None
) -> dict:
    """Apply ``transforms`` to one annotation's ``bbox`` (becomes XYXY_ABS, clipped to ``image_size
    (h, w)``), ``segmentation`` (polygons -> list of flat ``ndarray``; RLE -> transformed ``ndarray[H, W]``
    uint8 mask) and ``keypoints`` (``ndarray[K, 3]``). Returns a new dict."""
    if isinstance(transforms, (list, tuple)):
        transforms = TransformList(transforms)
    annotation = dict(annotation)
    bbox = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
    bbox = transforms.apply_box(np.array([bbox], dtype=np.float64))[0].clip(min=0)
    h, w = image_size
    annotation["bbox"] = np.minimum(bbox, [w, h, w, h])
    annotation["bbox_mode"] = BoxMode.XYXY_ABS
    if "segmentation" in annotation:
        segm = annotation["segmentation"]
        if isinstance(segm, list):
            polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        elif isinstance(segm, dict):
            annotation["segmentation"] = transforms.apply_segmentation(rle_to_mask(segm))
        elif isinstance(segm, np.ndarray):
            annotation["segmentation"] = transforms.apply_segmentation(segm)
        else:
            raise TypeError(
                f"segmentation must be polygons (list), an RLE dict or an ndarray mask, got {type(segm).__name__}"
            )
    if "keypoints" in annotation:
        annotation["keypoints"] = transform_keypoint_annotations(
            annotation["keypoints"], transforms, image_size, keypoint_hflip_indices
        )
    return annotation


def annotations_to_instances(
    annos: list[dict], image_size: tuple[int, int], mask_format: str = "polygon"
) -> Instances:
    """Build ``Instances(gt_boxes, gt_classes[, gt_masks][, gt_keypoints])`` from transformed
    annotations (see :func:`transform_instance_annotations`). ``gt_boxes`` are clipped to the image."""
    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(
            f"annotations_to_instances: mask_format must be 'polygon' or 'bitmask', got {mask_format!r}"
        )
    boxes = (
        np.stack(
            [
                BoxMode.convert(np.asarray(a["bbox"], dtype=np.float64), a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in annos
            ]
        )
        if annos
        else np.zeros((0, 4))
    )
    target = Instances(image_size)
    gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    gt_boxes.clip(image_size)
    target.gt_boxes = gt_boxes
    target.gt_classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)
    if annos and "segmentation" in annos[0]:
        segms = [a["segmentation"] for a in annos]
        if mask_format == "polygon":
            if not all(isinstance(s, list) for s in segms):
                raise ValueError(
                    "annotations_to_instances: mask_format='polygon' needs polygon segmentations"
                )
            target.gt_masks = PolygonMasks([[np.asarray(p, dtype=np.float64) for p in s] for s in segms])
        else:
            h, w = image_size
            masks = []
            for s in segms:
                if isinstance(s, list):
                    masks.append(polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in s], h, w))
                elif isinstance(s, dict):
                    masks.append(rle_to_mask(s).astype(bool))
                else:
                    m = np.asarray(s)
                    if m.shape != (h, w):
                        raise ValueError(
                            f"annotations_to_instances: mask must have shape ({h}, {w}), got {m.shape}"
                        )
                    masks.append(m.astype(bool))
            target.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    if annos and "keypoints" in annos[0]:
        target.gt_keypoints = Keypoints(
            np.stack([np.asarray(a["keypoints"], dtype=np.float32).reshape(-1, 3) for a in annos])
        )
    return target


def filter_empty_instances(
    instances: Instances, by_box: bool = True, by_mask: bool = True, box_threshold: float = 1e-5
) -> Instances:
    """Drop instances whose box is (nearly) empty or whose mask is empty."""
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box:
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty()
    return instances[keep]
