"""Semantic segmentation metrics from a confusion matrix (detectron2's SemSegEvaluator)."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from detcore.engine.evaluation._io import atomic_write_text
from detcore.engine.evaluation.evaluator import DatasetEvaluator, format_results_table

__all__ = ["SemSegEvaluator", "load_sem_seg_gt"]

logger = logging.getLogger(__name__)


def load_sem_seg_gt(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label image (e.g. a PNG of class ids) as an int64 array [H, W]."""
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.int64)


class SemSegEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/ACC (x100) of semantic segmentation.

    A confusion matrix ``[C+1, C+1]`` (rows: prediction, columns: ground truth; the extra column holds
    ignored pixels) is accumulated with ``np.bincount``; classes absent from the ground truth get nan IoU/ACC
    and are left out of the means, as in detectron2.

    Args:
        num_classes: number of classes C.
        ignore_label: ground-truth value of pixels that are not evaluated.
        class_names: names for the per-class metrics (default "0".."C-1").
        output_dir: when given, ``sem_seg_predictions.json`` (per image and class, an RLE of the predicted
            pixels) and ``sem_seg_evaluation.json`` (the metrics) are written there atomically.
        gt_loader: reads a ground-truth file name into an integer array [H, W] (default: an image file read
            with PIL).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        gt_loader: Callable[[str], np.ndarray] | None = None,
    ):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(ignore_label, int) or 0 <= ignore_label < num_classes:
            raise ValueError(
                f"ignore_label must be an int outside the class range [0, {num_classes}), got {ignore_label!r}"
            )
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        elif len(class_names) != num_classes:
            raise ValueError(f"class_names must have num_classes={num_classes} names, got {len(class_names)}")
        self._num_classes = num_classes
        self._ignore_label = ignore_label
        self._class_names = list(class_names)
        self._output_dir = Path(output_dir) if output_dir is not None else None
        self._gt_loader = gt_loader or load_sem_seg_gt
        self.reset()

    @property
    def confusion_matrix(self) -> np.ndarray:
        """int64 [C+1, C+1]: rows predicted class, columns ground-truth class (last column: ignored)."""
        return self._conf_matrix.copy()

    def reset(self) -> None:
        n = self._num_classes + 1
        self._conf_matrix = np.zeros((n, n), dtype=np.int64)
        self._predictions: list[dict[str, Any]] = []

    def _gt_of(self, inp: dict[str, Any]) -> np.ndarray:
        if "sem_seg" in inp:
            gt = inp["sem_seg"]
            gt = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
        elif "sem_seg_file_name" in inp:
            gt = np.asarray(self._gt_loader(inp["sem_seg_file_name"]))
        else:
            raise ValueError(
                f"every input needs 'sem_seg' (ground truth [H, W]) or 'sem_seg_file_name' (keys: {list(inp)})"
            )
        if gt.ndim != 2:
            raise ValueError(f"ground-truth sem_seg must have shape [H, W], got {list(gt.shape)}")
        if not np.issubdtype(gt.dtype, np.integer):
            raise TypeError(f"ground-truth sem_seg must hold integer class ids, got dtype {gt.dtype}")
        return gt.astype(np.int64)

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Accumulate each output's ``"sem_seg"`` (Tensor[C, H, W] scores, argmax over C) against its input's
        ground truth (``"sem_seg"`` int array/tensor [H, W], or ``"sem_seg_file_name"``)."""
        if len(inputs) != len(outputs):
            raise ValueError(
                f"inputs and outputs must have the same length, got {len(inputs)} and {len(outputs)}"
            )
        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                raise ValueError(f"every output needs 'sem_seg' scores [C, H, W] (keys: {list(out)})")
            logits = out["sem_seg"]
            if not isinstance(logits, torch.Tensor):
                logits = torch.as_tensor(np.asarray(logits))
            if logits.dim() != 3 or logits.shape[0] != n:
                raise ValueError(f"output sem_seg must have shape [C={n}, H, W], got {list(logits.shape)}")
            pred = logits.argmax(dim=0).cpu().numpy().astype(np.int64)
            gt = self._gt_of(inp)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"ground-truth sem_seg shape {list(gt.shape)} differs from the prediction's {list(pred.shape)}"
                )
            gt = gt.copy()
            ignored = gt == self._ignore_label
            bad = ~ignored & ((gt < 0) | (gt >= n))
            if bad.any():
                raise ValueError(
                    f"ground-truth sem_seg has values {np.unique(gt[bad])[:10].tolist()} outside [0, {n}) that "
                    f"are not ignore_label={self._ignore_label}"
                )
            gt[ignored] = n
            self._conf_matrix += np.bincount(
                (n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2
            ).reshape(n + 1, n + 1)
            if self._output_dir is not None:
                self._predictions.extend(self._encode_json(pred, inp.get("file_name", inp.get("image_id"))))

    def _encode_json(self, pred: np.ndarray, file_name: Any) -> list[dict[str, Any]]:
        out = []
        for label in np.unique(pred).tolist():
            mask = (pred == label)[:, :, None]
            rle = mask_util.encode(np.array(mask, order="F", dtype=np.uint8))[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            out.append({"file_name": file_name, "category_id": int(label), "segmentation": rle})
        return out

    def evaluate(self) -> OrderedDict[str, Any]:
        """Metrics of everything processed, as ``{"sem_seg": {"mIoU", "fwIoU", "IoU-<c>"..., "mACC", "pACC",
        "ACC-<c>"...}}`` (percent; nan for classes without ground-truth pixels)."""
        n = self._num_classes
        cm = self._conf_matrix
        acc = np.full(n, np.nan, dtype=np.float64)
        iou = np.full(n, np.nan, dtype=np.float64)
        tp = cm.diagonal()[:-1].astype(np.float64)
        pos_gt = np.sum(cm[:-1, :-1], axis=0).astype(np.float64)
        pos_pred = np.sum(cm[:-1, :-1], axis=1).astype(np.float64)
        total = np.sum(pos_gt)
        acc_valid = pos_gt > 0
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        union = pos_gt + pos_pred - tp
        iou_valid = acc_valid & (union > 0)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]
        if total > 0:
            class_weights = pos_gt / total
            macc = float(np.sum(acc[acc_valid]) / np.sum(acc_valid))
            miou = float(np.sum(iou[iou_valid]) / np.sum(iou_valid))
            fiou = float(np.sum(iou[iou_valid] * class_weights[iou_valid]))
            pacc = float(np.sum(tp) / total)
        else:
            logger.warning("SemSegEvaluator: no evaluated ground-truth pixels")
            macc = miou = fiou = pacc = float("nan")

        res: dict[str, float] = {"mIoU": 100 * miou, "fwIoU": 100 * fiou}
        for i, name in enumerate(self._class_names):
            res[f"IoU-{name}"] = float(100 * iou[i])
        res["mACC"] = 100 * macc
        res["pACC"] = 100 * pacc
        for i, name in enumerate(self._class_names):
            res[f"ACC-{name}"] = float(100 * acc[i])

        if self._output_dir is not None:
            atomic_write_text(self._output_dir / "sem_seg_predictions.json", json.dumps(self._predictions))
            atomic_write_text(self._output_dir / "sem_seg_evaluation.json", json.dumps(res))
        logger.info(
            "Semantic segmentation results:\n%s",
            format_results_table({k: res[k] for k in ("mIoU", "fwIoU", "mACC", "pACC")}),
        )
        return OrderedDict({"sem_seg": res})
