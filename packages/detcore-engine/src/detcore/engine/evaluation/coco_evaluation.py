"""COCO-style box, mask and keypoint AP with pycocotools, reported as detectron2's COCOEvaluator does."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.engine.evaluation._io import atomic_write_text
from detcore.engine.evaluation.evaluator import DatasetEvaluator, format_results_table

__all__ = [
    "COCOEvaluator",
    "category_mapping_by_name",
    "evaluate_predictions_on_coco",
    "instances_to_coco_json",
    "load_coco_gt",
]

logger = logging.getLogger(__name__)

_METRICS = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
}
_TASKS = ("bbox", "segm", "keypoints")


def _log_stdout(buf: io.StringIO, level: int = logging.DEBUG) -> None:
    text = buf.getvalue().strip()
    if text:
        logger.log(level, "%s", text)


def load_coco_gt(coco_gt: str | os.PathLike[str] | COCO | Mapping[str, Any]) -> COCO:
    """A pycocotools ``COCO`` from a json path, an in-memory COCO dataset dict, or a ``COCO`` (returned as is).

    Raises:
        TypeError: for any other type.
        FileNotFoundError: when the json path does not exist.
    """
    if isinstance(coco_gt, COCO):
        return coco_gt
    buf = io.StringIO()
    if isinstance(coco_gt, (str, os.PathLike)):
        path = Path(coco_gt)
        if not path.is_file():
            raise FileNotFoundError(f"coco_gt: COCO json file {str(path)!r} does not exist")
        with contextlib.redirect_stdout(buf):
            coco = COCO(str(path))
    elif isinstance(coco_gt, Mapping):
        coco = COCO()
        coco.dataset = copy.deepcopy(dict(coco_gt))
        with contextlib.redirect_stdout(buf):
            coco.createIndex()
    else:
        raise TypeError(
            "coco_gt must be a COCO json path, a COCO dataset dict or a pycocotools COCO, "
            f"got {type(coco_gt).__name__}"
        )
    _log_stdout(buf)
    return coco


def category_mapping_by_name(
    gt_categories: Sequence[Mapping[str, Any]], thing_classes: Sequence[str]
) -> dict[int, int]:
    """Match a model's class names to a COCO json's categories by name.

    Names are compared after stripping surrounding whitespace, case-insensitively.

    Args:
        gt_categories: the json's "categories" (dicts with "id" and "name").
        thing_classes: the model's class names; index = contiguous class id.

    Returns:
        ``{contiguous_id: dataset_category_id}`` for every class name found among the categories (classes
        the ground truth does not have are left out).

    Raises:
        ValueError: when a name is duplicated on either side (the match would be ambiguous) or when no
            class matches at all.
    """

    def norm(name: Any) -> str:
        if not isinstance(name, str):
            raise TypeError(f"category names must be strings, got {type(name).__name__} ({name!r})")
        return name.strip().casefold()

    by_name: dict[str, int] = {}
    for cat in gt_categories:
        if "id" not in cat or "name" not in cat:
            raise ValueError(f"gt_categories: every category needs 'id' and 'name', got {dict(cat)!r}")
        key = norm(cat["name"])
        if key in by_name:
            raise ValueError(f"gt_categories: category name {cat['name']!r} appears more than once")
        by_name[key] = int(cat["id"])
    seen: set[str] = set()
    mapping: dict[int, int] = {}
    for i, name in enumerate(thing_classes):
        key = norm(name)
        if key in seen:
            raise ValueError(f"thing_classes: class name {name!r} appears more than once")
        seen.add(key)
        if key in by_name:
            mapping[i] = by_name[key]
    if not mapping:
        raise ValueError(
            f"no class of thing_classes {list(thing_classes)[:10]} matches a ground-truth category name "
            f"{[c['name'] for c in gt_categories][:10]}"
        )
    missing = [name for i, name in enumerate(thing_classes) if i not in mapping]
    if missing:
        logger.warning("classes without a ground-truth category of the same name (ignored): %s", missing)
    return mapping


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def instances_to_coco_json(instances: Any, img_id: int) -> list[dict[str, Any]]:
    """Convert one image's predicted ``Instances`` to COCO result dicts (detectron2's conversion).

    Fields used: ``pred_boxes`` (Boxes or Tensor[N, 4], XYXY absolute pixels) -> "bbox" XYWH; ``scores``
    (Tensor[N]); ``pred_classes`` (Tensor[N], contiguous ids, written as "category_id" unmapped);
    ``pred_masks`` (Tensor[N, H, W] bool, or BitMasks) -> "segmentation" RLE with a str "counts";
    ``pred_keypoints`` (Tensor[N, K, 3] or Keypoints, x, y, score) -> flat "keypoints" list, with 0.5 taken
    off x and y because COCO keypoint annotations are pixel indices while predictions are continuous
    coordinates (the inverse of loading).

    Args:
        instances: the predictions (a detcore ``Instances``).
        img_id: the COCO image id.

    Returns:
        One dict per instance.
    """
    num_instance = len(instances) if instances.get_fields() else 0
    if num_instance == 0:
        return []
    for name in ("pred_boxes", "scores", "pred_classes"):
        if not instances.has(name):
            raise ValueError(
                f"instances must have the field {name!r} (fields: {list(instances.get_fields())})"
            )
    boxes = instances.pred_boxes
    boxes = _to_numpy(getattr(boxes, "tensor", boxes)).astype(np.float64).reshape(-1, 4)
    boxes[:, 2:] -= boxes[:, :2]
    boxes_l = boxes.tolist()
    scores = _to_numpy(instances.scores).astype(np.float64).reshape(-1).tolist()
    classes = _to_numpy(instances.pred_classes).astype(np.int64).reshape(-1).tolist()

    rles = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        masks = _to_numpy(getattr(masks, "tensor", masks))
        if masks.ndim != 3 or masks.shape[0] != num_instance:
            raise ValueError(f"pred_masks must have shape [N={num_instance}, H, W], got {list(masks.shape)}")
        rles = []
        for mask in masks:
            rle = mask_util.encode(np.array(mask[:, :, None], order="F", dtype=np.uint8))[0]
            # json cannot hold bytes
            rle["counts"] = rle["counts"].decode("utf-8")
            rles.append(rle)

    keypoints = None
    if instances.has("pred_keypoints"):
        kpts = instances.pred_keypoints
        kpts = _to_numpy(getattr(kpts, "tensor", kpts)).astype(np.float64)
        if kpts.ndim != 3 or kpts.shape[0] != num_instance or kpts.shape[2] != 3:
            raise ValueError(
                f"pred_keypoints must have shape [N={num_instance}, K, 3], got {list(kpts.shape)}"
            )
        kpts = kpts.copy()
        kpts[:, :, :2] -= 0.5
        keypoints = kpts

    results = []
    for k in range(num_instance):
        result: dict[str, Any] = {
            "image_id": img_id,
            "category_id": classes[k],
            "bbox": boxes_l[k],
            "score": scores[k],
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints is not None:
            result["keypoints"] = keypoints[k].reshape(-1).tolist()
        results.append(result)
    return results


class _COCOevalMaxDets(COCOeval):
    """COCOeval whose summary uses the last of ``params.maxDets`` instead of a fixed 100 (detectron2's)."""

    def summarize(self) -> None:
        p = self.params
        if p.iouType == "keypoints":
            super().summarize()
            return

        def _summarize(ap: int = 1, iou_thr: float | None = None, area_rng: str = "all", max_dets: int = 100):
            aind = [i for i, a in enumerate(p.areaRngLbl) if a == area_rng]
            mind = [i for i, m in enumerate(p.maxDets) if m == max_dets]
            if ap == 1:
                s = self.eval["precision"]  # [T, R, K, A, M]
                if iou_thr is not None:
                    s = s[np.where(np.isclose(iou_thr, p.iouThrs))[0]]
                s = s[:, :, :, aind, mind]
            else:
                s = self.eval["recall"]  # [T, K, A, M]
                if iou_thr is not None:
                    s = s[np.where(np.isclose(iou_thr, p.iouThrs))[0]]
                s = s[:, :, aind, mind]
            valid = s[s > -1]
            return -1.0 if valid.size == 0 else float(np.mean(valid))

        m = p.maxDets
        stats = np.zeros((12,))
        stats[0] = _summarize(1, max_dets=m[2])
        stats[1] = _summarize(1, iou_thr=0.5, max_dets=m[2])
        stats[2] = _summarize(1, iou_thr=0.75, max_dets=m[2])
        stats[3] = _summarize(1, area_rng="small", max_dets=m[2])
        stats[4] = _summarize(1, area_rng="medium", max_dets=m[2])
        stats[5] = _summarize(1, area_rng="large", max_dets=m[2])
        stats[6] = _summarize(0, max_dets=m[0])
        stats[7] = _summarize(0, max_dets=m[1])
        stats[8] = _summarize(0, max_dets=m[2])
        stats[9] = _summarize(0, area_rng="small", max_dets=m[2])
        stats[10] = _summarize(0, area_rng="medium", max_dets=m[2])
        stats[11] = _summarize(0, area_rng="large", max_dets=m[2])
        self.stats = stats


def evaluate_predictions_on_coco(
    coco_gt: COCO,
    coco_results: list[dict[str, Any]],
    iou_type: str,
    *,
    kpt_oks_sigmas: Sequence[float] | None = None,
    img_ids: Iterable[int] | None = None,
    cat_ids: Iterable[int] | None = None,
    max_dets_per_image: Sequence[int] | None = None,
) -> COCOeval:
    """Run pycocotools' evaluate/accumulate/summarize on results already in dataset category ids.

    For "segm" the results' "bbox" is dropped so that pycocotools uses the mask area (not the box area)
    for the small/medium/large split, as detectron2 does.

    Args:
        coco_gt: the ground truth.
        coco_results: non-empty list of COCO result dicts.
        iou_type: "bbox", "segm" or "keypoints".
        kpt_oks_sigmas: per-keypoint OKS sigmas (default: pycocotools' 17 COCO person sigmas).
        img_ids: evaluate only these images (default: all ground-truth images).
        cat_ids: evaluate only these categories (default: all ground-truth categories).
        max_dets_per_image: at least 3 increasing limits for box/mask AP (default [1, 10, 100]).

    Returns:
        The evaluated ``COCOeval`` (``.stats`` and ``.eval`` filled).
    """
    if iou_type not in _TASKS:
        raise ValueError(f"iou_type must be one of {_TASKS}, got {iou_type!r}")
    if not coco_results:
        raise ValueError("coco_results must be a non-empty list of COCO result dicts")
    if iou_type == "segm":
        coco_results = copy.deepcopy(coco_results)
        for c in coco_results:
            if "segmentation" not in c:
                raise ValueError("segm evaluation needs 'segmentation' in every result (predict pred_masks)")
            c.pop("bbox", None)
    if iou_type == "keypoints" and any("keypoints" not in c for c in coco_results):
        raise ValueError("keypoints evaluation needs 'keypoints' in every result (predict pred_keypoints)")
    unknown = {c["image_id"] for c in coco_results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"predictions for image ids not in the ground truth: {sorted(unknown)[:10]}")

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_dt = coco_gt.loadRes(coco_results)
    if max_dets_per_image is None:
        max_dets_per_image = [1, 10, 100]
    else:
        max_dets_per_image = [int(m) for m in max_dets_per_image]
        if len(max_dets_per_image) < 3:
            raise ValueError(f"max_dets_per_image must have at least 3 entries, got {max_dets_per_image}")
    cls = COCOeval if max_dets_per_image[-1] == 100 else _COCOevalMaxDets
    coco_eval = cls(coco_gt, coco_dt, iou_type)
    if iou_type != "keypoints":
        coco_eval.params.maxDets = max_dets_per_image
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    if cat_ids is not None:
        coco_eval.params.catIds = sorted(cat_ids)

    if iou_type == "keypoints":
        if kpt_oks_sigmas is not None:
            coco_eval.params.kpt_oks_sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)
        num_dt = len(coco_results[0]["keypoints"]) // 3
        gt_with_kpts = [a for a in coco_gt.anns.values() if "keypoints" in a]
        if not gt_with_kpts:
            raise ValueError("keypoints evaluation needs ground-truth annotations with 'keypoints'")
        num_gt = len(gt_with_kpts[0]["keypoints"]) // 3
        num_oks = len(coco_eval.params.kpt_oks_sigmas)
        if not num_oks == num_dt == num_gt:
            raise ValueError(
                f"kpt_oks_sigmas has {num_oks} entries, predictions have {num_dt} keypoints and the ground "
                f"truth has {num_gt}: they must agree (pass kpt_oks_sigmas for non-COCO-person keypoints)"
            )

    with contextlib.redirect_stdout(buf):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    _log_stdout(buf, logging.INFO)
    return coco_eval


class COCOEvaluator(DatasetEvaluator):
    """Box, mask and keypoint AP (COCO metrics via pycocotools), reported as detectron2 does.

    Predictions' ``pred_classes`` are contiguous ids ``0..C-1``; they are mapped to the ground truth's
    category ids by (in order of precedence) ``contiguous_id_to_dataset_id``, by matching ``thing_classes``
    to the categories' names (:func:`category_mapping_by_name`), or by detectron2's default (the
    ground-truth category ids sorted ascending are classes ``0..C-1``). When classes are matched by name and
    the ground truth has categories no class matches, AP is averaged over the matched categories only;
    predictions of classes with no category are dropped.

    Results: ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...}, "segm": {...},
    "keypoints": {"AP", "AP50", "AP75", "APm", "APl"}}``, all x100, nan where pycocotools reports -1.

    Args:
        coco_gt: ground truth: COCO json path, COCO dataset dict, or pycocotools ``COCO``.
        thing_classes: class names by contiguous id (default: the categories' names in id order).
        contiguous_id_to_dataset_id: ``{contiguous_id: category_id}``.
        tasks: subset of ("bbox", "segm", "keypoints"); default: inferred from the predictions (bbox always,
            segm when masks were predicted, keypoints when keypoints were predicted).
        output_dir: when given, ``coco_instances_results.json`` is written there (atomically).
        kpt_oks_sigmas: per-keypoint OKS sigmas (needed for keypoints other than the 17 COCO person ones).
        max_dets_per_image: box/mask detection limits, default [1, 10, 100].
    """

    def __init__(
        self,
        coco_gt: str | os.PathLike[str] | COCO | Mapping[str, Any],
        thing_classes: Sequence[str] | None = None,
        contiguous_id_to_dataset_id: Mapping[int, int] | None = None,
        tasks: Iterable[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        kpt_oks_sigmas: Sequence[float] | None = None,
        max_dets_per_image: Sequence[int] | int | None = None,
    ):
        self._coco_api = load_coco_gt(coco_gt)
        cats = sorted(self._coco_api.dataset.get("categories", []), key=lambda c: c["id"])
        if not cats:
            raise ValueError("coco_gt has no 'categories'")
        if thing_classes is not None:
            if isinstance(thing_classes, str) or not all(isinstance(c, str) for c in thing_classes):
                raise TypeError("thing_classes must be a list of class-name strings")
            thing_classes = list(thing_classes)
        by_name = contiguous_id_to_dataset_id is None and thing_classes is not None
        if contiguous_id_to_dataset_id is not None:
            mapping = {int(k): int(v) for k, v in contiguous_id_to_dataset_id.items()}
            known = set(self._coco_api.getCatIds())
            bad = sorted(set(mapping.values()) - known)
            if bad:
                raise ValueError(
                    f"contiguous_id_to_dataset_id maps to category ids {bad} that the ground truth lacks "
                    f"(it has {sorted(known)[:20]})"
                )
            if len(set(mapping.values())) != len(mapping):
                raise ValueError("contiguous_id_to_dataset_id must map classes to distinct category ids")
            if thing_classes is None:
                names = {c["id"]: c["name"] for c in cats}
                num = max(mapping) + 1
                thing_classes = [names.get(mapping.get(i, -1), str(i)) for i in range(num)]
        elif thing_classes is not None:
            mapping = category_mapping_by_name(cats, thing_classes)
        else:
            mapping = {i: int(c["id"]) for i, c in enumerate(cats)}
            thing_classes = [str(c["name"]) for c in cats]
        self._contiguous_to_dataset = mapping
        self._matched_by_name = by_name
        self._thing_classes = thing_classes
        gt_cat_ids = set(self._coco_api.getCatIds())
        self._cat_ids = None if set(mapping.values()) == gt_cat_ids else sorted(mapping.values())

        if tasks is not None:
            tasks = tuple(tasks) if not isinstance(tasks, str) else (tasks,)
            bad_tasks = [t for t in tasks if t not in _TASKS]
            if bad_tasks or not tasks:
                raise ValueError(f"tasks must be a non-empty subset of {_TASKS}, got {tasks!r}")
        self._tasks = tasks
        if isinstance(max_dets_per_image, int):
            max_dets_per_image = [1, 10, max_dets_per_image]
        self._max_dets_per_image = max_dets_per_image
        self._kpt_oks_sigmas = kpt_oks_sigmas
        self._output_dir = Path(output_dir) if output_dir is not None else None
        self._predictions: list[dict[str, Any]] = []

    @classmethod
    def from_dataset(cls, dataset_name: str, **kwargs: Any) -> COCOEvaluator:
        """Build from a registered dataset's metadata (detectron2's ``COCOEvaluator(dataset_name)``).

        The metadata must have ``json_file``; ``thing_classes`` and ``thing_dataset_id_to_contiguous_id``
        are used when present. ``kwargs`` go to the constructor.

        Raises:
            ImportError: when the dataset catalog (``detcore.engine.data``) is not available.
        """
        try:
            from detcore.engine.data import MetadataCatalog
        except ImportError as exc:
            raise ImportError(
                "COCOEvaluator.from_dataset needs the dataset catalog detcore.engine.data.MetadataCatalog"
            ) from exc
        meta = MetadataCatalog.get(dataset_name)
        json_file = getattr(meta, "json_file", None)
        if json_file is None:
            raise ValueError(
                f"dataset {dataset_name!r} has no 'json_file' in its metadata: cannot evaluate COCO AP"
            )
        id_map = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        kwargs.setdefault("thing_classes", getattr(meta, "thing_classes", None))
        if id_map is not None:
            kwargs.setdefault("contiguous_id_to_dataset_id", {v: k for k, v in id_map.items()})
        return cls(json_file, **kwargs)

    @property
    def thing_classes(self) -> list[str]:
        return list(self._thing_classes)

    @property
    def contiguous_id_to_dataset_id(self) -> dict[int, int]:
        return dict(self._contiguous_to_dataset)

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Convert each output's "instances" to COCO results for the input's "image_id"."""
        if len(inputs) != len(outputs):
            raise ValueError(
                f"inputs and outputs must have the same length, got {len(inputs)} and {len(outputs)}"
            )
        for inp, out in zip(inputs, outputs):
            if "image_id" not in inp:
                raise ValueError(f"every input needs an 'image_id' for COCO evaluation (keys: {list(inp)})")
            if "instances" not in out:
                continue
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "instances": instances_to_coco_json(out["instances"], inp["image_id"]),
                }
            )

    def _to_dataset_ids(self, coco_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = self._matched_by_name
        kept = []
        dropped = 0
        num_classes = len(self._thing_classes)
        for r in coco_results:
            cid = int(r["category_id"])
            if cid not in self._contiguous_to_dataset:
                if by_name and 0 <= cid < num_classes:
                    dropped += 1
                    continue
                raise ValueError(
                    f"predicted class {cid} has no dataset category (classes 0..{num_classes - 1}; mapped: "
                    f"{sorted(self._contiguous_to_dataset)[:20]})"
                )
            kept.append({**r, "category_id": self._contiguous_to_dataset[cid]})
        if dropped:
            logger.warning("dropped %d predictions of classes that have no ground-truth category", dropped)
        return kept

    def evaluate(self, img_ids: Iterable[int] | None = None) -> OrderedDict[str, Any]:
        """Compute AP for every task (default: all ground-truth images; ``img_ids`` restricts them)."""
        if not self._predictions:
            logger.warning("COCOEvaluator did not receive valid predictions")
            return OrderedDict()
        coco_results = list(itertools.chain.from_iterable(p["instances"] for p in self._predictions))
        tasks = self._tasks or _tasks_from_predictions(coco_results)
        coco_results = self._to_dataset_ids(coco_results)
        if self._output_dir is not None:
            path = atomic_write_text(
                self._output_dir / "coco_instances_results.json", json.dumps(coco_results)
            )
            logger.info("Saving results to %s", path)

        results: OrderedDict[str, Any] = OrderedDict()
        for task in sorted(tasks):
            if coco_results:
                coco_eval = evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    img_ids=img_ids,
                    cat_ids=self._cat_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
            else:
                coco_eval = None
            results[task] = self._derive_coco_results(coco_eval, task)
        return results

    def _derive_coco_results(self, coco_eval: COCOeval | None, iou_type: str) -> dict[str, float]:
        metrics = _METRICS[iou_type]
        if coco_eval is None:
            logger.warning("No predictions from the model!")
            return {m: float("nan") for m in metrics}
        res = {
            m: float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
            for i, m in enumerate(metrics)
        }
        logger.info("Evaluation results for %s:\n%s", iou_type, format_results_table(res))
        if not np.isfinite(sum(res.values())):
            logger.info("Some metrics cannot be computed and are shown as NaN.")
        if len(self._thing_classes) <= 1:
            return res
        # precision: [iou thresholds, recall thresholds, categories, area ranges, max dets]
        precisions = coco_eval.eval["precision"]
        cat_ids = list(coco_eval.params.catIds)
        per_cat = {}
        for cid, name in enumerate(self._thing_classes):
            if cid not in self._contiguous_to_dataset:
                continue
            k = cat_ids.index(self._contiguous_to_dataset[cid])
            precision = precisions[:, :, k, 0, -1]
            precision = precision[precision > -1]
            ap = float(np.mean(precision)) if precision.size else float("nan")
            per_cat[f"AP-{name}"] = ap * 100
        logger.info("Per-category %s AP:\n%s", iou_type, format_results_table(per_cat))
        res.update(per_cat)
        return res


def _tasks_from_predictions(predictions: list[dict[str, Any]]) -> tuple[str, ...]:
    tasks = {"bbox"}
    for pred in predictions:
        if "segmentation" in pred:
            tasks.add("segm")
        if "keypoints" in pred:
            tasks.add("keypoints")
    return tuple(sorted(tasks))
