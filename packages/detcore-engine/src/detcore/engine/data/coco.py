"""COCO-format loaders (instances, keypoints, panoptic) returning detectron2-format dataset dicts.

Category ids of the json are mapped to contiguous ids ``0..K-1`` in sorted id order; the mapping is in
the metadata as ``thing_dataset_id_to_contiguous_id``. Keypoint ``(x, y)`` get ``+0.5`` (COCO keypoints are
integer pixel indices; detcore uses continuous coordinates where pixel ``i`` spans ``[i, i + 1]``), as
detectron2 does.

Malformed input raises ``ValueError`` naming the file and the record (image id / annotation id); with
``skip_invalid=True`` the bad record is skipped with a warning instead (a corrupt json always raises).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from typing import Any

from detcore.structures import BoxMode

__all__ = ["load_coco_json", "load_coco_panoptic_json"]


def _read_json(json_file: str) -> dict:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"COCO json {json_file!r} does not exist") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO json {json_file!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"COCO json {json_file!r} must hold an object, got {type(data).__name__}")
    return data


class _Problems:
    def __init__(self, json_file: str, skip_invalid: bool):
        self.json_file = json_file
        self.skip_invalid = skip_invalid

    def __call__(self, where: str, what: str) -> None:
        msg = f"{self.json_file}: {where}: {what}"
        if not self.skip_invalid:
            raise ValueError(msg + " (pass skip_invalid=True to skip such records)")
        warnings.warn(msg + "; skipped", UserWarning, stacklevel=3)


def _valid_bbox(bbox: Any) -> bool:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return False
    try:
        vals = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return False
    return all(math.isfinite(v) for v in vals) and vals[2] >= 0 and vals[3] >= 0


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: str | None = None,
    extra_annotation_keys: list[str] | None = None,
    *,
    check_files: bool = False,
    skip_invalid: bool = False,
) -> list[dict]:
    """Load a COCO instances (or person-keypoints) json with pycocotools.

    Args:
        json_file: path of the json.
        image_root: directory the images' ``file_name`` are relative to.
        dataset_name: if given, its :class:`~detcore.engine.data.catalog.Metadata` gets ``thing_classes``,
            ``thing_dataset_id_to_contiguous_id`` (and ``json_file``, ``image_root``).
        extra_annotation_keys: annotation keys copied besides the standard ones.
        check_files: verify every image file exists.
        skip_invalid: skip (with a warning) malformed records instead of raising.

    Returns:
        list[dict]: one per image: ``file_name, height, width, image_id, annotations`` where each
        annotation has ``bbox`` (XYWH_ABS), ``bbox_mode``, ``category_id`` (contiguous), ``iscrowd`` and,
        when present, ``segmentation`` (polygons, each >= 6 coords, or an RLE dict), ``keypoints`` (flat
        ``[x, y, v] * K``).

    Raises:
        ValueError: a corrupt json, a missing image file (with ``check_files``), a box that is not 4
            finite numbers with non-negative size, or an unknown category id; names file and record.
    """
    from pycocotools.coco import COCO

    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    data = _read_json(json_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO json {json_file!r}: missing list {key!r}")
    problem = _Problems(json_file, skip_invalid)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
    except (KeyError, TypeError) as e:
        raise ValueError(f"COCO json {json_file!r}: malformed record ({type(e).__name__}: {e})") from e

    cat_ids = sorted(c["id"] for c in data["categories"])
    cats = coco.loadCats(cat_ids)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    if dataset_name is not None:
        from detcore.engine.data.catalog import MetadataCatalog

        meta = MetadataCatalog.get(dataset_name)
        meta.set(
            thing_classes=[c["name"] for c in cats],
            thing_dataset_id_to_contiguous_id=id_map,
            json_file=json_file,
            image_root=image_root,
        )
        kp_cat = next((c for c in cats if c.get("keypoints")), None)
        if kp_cat is not None and meta.get("keypoint_names") is None:
            meta.set(keypoint_names=list(kp_cat["keypoints"]))

    ann_keys = ["iscrowd", "bbox", "keypoints", "category_id", *(extra_annotation_keys or [])]
    img_ids = sorted(coco.imgs.keys())
    dataset_dicts = []
    for img_id in img_ids:
        img = coco.imgs[img_id]
        where = f"image id {img_id}"
        if not all(k in img for k in ("file_name", "height", "width")):
            problem(where, "image record needs file_name, height and width")
            continue
        file_name = os.path.join(image_root, img["file_name"])
        if check_files and not os.path.isfile(file_name):
            problem(where, f"image file {file_name!r} does not exist")
            continue
        record = {
            "file_name": file_name,
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img_id,
        }
        objs = []
        for anno in coco.imgToAnns.get(img_id, []):
            awhere = f"{where}, annotation id {anno.get('id')}"
            if anno.get("ignore", 0) != 0:
                continue
            if not _valid_bbox(anno.get("bbox")):
                problem(
                    awhere,
                    f"bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0, got {anno.get('bbox')!r}",
                )
                continue
            if anno.get("category_id") not in id_map:
                problem(awhere, f"unknown category_id {anno.get('category_id')!r}; categories are {cat_ids}")
                continue
            obj = {k: anno[k] for k in ann_keys if k in anno}
            obj["bbox"] = [float(v) for v in anno["bbox"]]
            obj["iscrowd"] = int(anno.get("iscrowd", 0))
            segm = anno.get("segmentation")
            if segm:
                if isinstance(segm, dict):
                    if isinstance(segm.get("counts"), list):  # uncompressed RLE
                        from pycocotools import mask as mask_util

                        segm = mask_util.frPyObjects(segm, *segm["size"])
                else:
                    valid = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
                    if len(valid) < len(segm):
                        warnings.warn(
                            f"{json_file}: {awhere}: dropped {len(segm) - len(valid)} invalid polygon(s) "
                            f"(fewer than 6 coordinates or an odd count)",
                            UserWarning,
                            stacklevel=2,
                        )
                    if not valid:
                        continue  # an instance without a valid polygon is dropped, as detectron2 does
                    segm = valid
                obj["segmentation"] = segm
            kps = anno.get("keypoints")
            if kps:
                obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(kps)]
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            obj["category_id"] = id_map[anno["category_id"]]
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)
    return dataset_dicts


def load_coco_panoptic_json(
    json_file: str,
    image_dir: str,
    gt_dir: str,
    meta: dict,
    *,
    check_files: bool = False,
    skip_invalid: bool = False,
) -> list[dict]:
    """Load a COCO panoptic json.

    Args:
        json_file: the panoptic json (``annotations`` with ``file_name`` of the PNG and ``segments_info``).
        image_dir: directory of the images (file names from the json's ``images``).
        gt_dir: directory of the panoptic PNGs.
        meta: ``thing_dataset_id_to_contiguous_id`` and ``stuff_dataset_id_to_contiguous_id`` dicts.

    Returns:
        list[dict]: ``file_name, image_id, height, width, pan_seg_file_name, segments_info`` where each
        segment has ``id, category_id`` (contiguous), ``isthing``, ``iscrowd``, ``area``, ``bbox``.
    """
    json_file = os.fspath(json_file)
    data = _read_json(json_file)
    problem = _Problems(json_file, skip_invalid)
    things = {int(k): v for k, v in meta.get("thing_dataset_id_to_contiguous_id", {}).items()}
    stuffs = {int(k): v for k, v in meta.get("stuff_dataset_id_to_contiguous_id", {}).items()}
    images = {img["id"]: img for img in data.get("images", [])}
    out = []
    for ann in data.get("annotations", []):
        image_id = ann.get("image_id")
        where = f"image id {image_id}"
        img = images.get(image_id)
        if img is None:
            problem(where, "panoptic annotation refers to an image not in 'images'")
            continue
        file_name = os.path.join(image_dir, img["file_name"])
        pan = os.path.join(gt_dir, ann["file_name"])
        if check_files and not (os.path.isfile(file_name) and os.path.isfile(pan)):
            problem(where, f"image {file_name!r} or panoptic PNG {pan!r} does not exist")
            continue
        segments, ok = [], True
        for seg in ann.get("segments_info", []):
            cid = seg.get("category_id")
            if cid in things:
                seg = {**seg, "category_id": things[cid], "isthing": True}
            elif cid in stuffs:
                seg = {**seg, "category_id": stuffs[cid], "isthing": False}
            else:
                problem(f"{where}, segment id {seg.get('id')}", f"unknown category_id {cid!r}")
                ok = False
                break
            segments.append(seg)
        if not ok:
            continue
        out.append(
            {
                "file_name": file_name,
                "image_id": image_id,
                "height": int(img["height"]),
                "width": int(img["width"]),
                "pan_seg_file_name": pan,
                "segments_info": segments,
            }
        )
    return out
