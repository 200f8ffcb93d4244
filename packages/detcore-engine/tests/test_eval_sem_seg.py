"""SemSegEvaluator against hand-computed confusion-matrix metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.engine.evaluation import SemSegEvaluator


def _logits(pred: np.ndarray, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Scores [C, H, W] whose argmax is ``pred``."""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes).permute(2, 0, 1).float()
    return onehot * 5 + torch.rand(onehot.shape, generator=g)


# two images; 255 = ignored
_GT1 = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
_PRED1 = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
_GT2 = np.array([[0, 255, 0]])
_PRED2 = np.array([[0, 2, 2]])


def test_metrics_match_hand_computed_confusion_matrix(tmp_path):
    ev = SemSegEvaluator(3, class_names=["a", "b", "c"], output_dir=tmp_path)
    ev.process([{"sem_seg": torch.from_numpy(_GT1), "file_name": "1.png"}], [{"sem_seg": _logits(_PRED1, 3)}])
    # ground truth read from a label PNG
    Image.fromarray(_GT2.astype(np.uint8)).save(tmp_path / "gt2.png")
    ev.process(
        [{"sem_seg_file_name": str(tmp_path / "gt2.png"), "file_name": "2.png"}],
        [{"sem_seg": _logits(_PRED2, 3)}],
    )

    # rows: prediction, columns: ground truth, last column: ignored
    expected_cm = np.array([[2, 0, 1, 1], [1, 2, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(ev.confusion_matrix, expected_cm)
    res = ev.evaluate()["sem_seg"]
    # class a: tp 2, gt 4, pred 3 -> IoU 2/5, ACC 2/4; b: tp 2, gt 3, pred 3 -> 2/4, 2/3; c: tp 1, gt 2, pred 3 -> 1/4, 1/2
    iou = [0.4, 0.5, 0.25]
    acc = [0.5, 2 / 3, 0.5]
    assert res["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert res["fwIoU"] == pytest.approx(100 * (4 * 0.4 + 3 * 0.5 + 2 * 0.25) / 9)
    assert res["mACC"] == pytest.approx(100 * sum(acc) / 3)
    assert res["pACC"] == pytest.approx(100 * 5 / 9)
    for name, i_, a_ in zip("abc", iou, acc):
        assert res[f"IoU-{name}"] == pytest.approx(100 * i_)
        assert res[f"ACC-{name}"] == pytest.approx(100 * a_)
    assert list(res)[:2] == ["mIoU", "fwIoU"]
    written = json.loads((tmp_path / "sem_seg_evaluation.json").read_text())
    assert written["mIoU"] == pytest.approx(res["mIoU"])
    preds = json.loads((tmp_path / "sem_seg_predictions.json").read_text())
    assert {(p["file_name"], p["category_id"]) for p in preds} == {
        ("1.png", 0), ("1.png", 1), ("1.png", 2), ("2.png", 0), ("2.png", 2)
    }  # fmt: skip

    ev.reset()
    assert not ev.confusion_matrix.any()


def test_class_without_ground_truth_is_nan_and_left_out():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])  # class 2 predicted but absent from the ground truth
    ev = SemSegEvaluator(3, ignore_label=-1)
    ev.process([{"sem_seg": gt}], [{"sem_seg": _logits(pred, 3)}])
    res = ev.evaluate()["sem_seg"]
    assert math.isnan(res["IoU-2"]) and math.isnan(res["ACC-2"])
    assert res["IoU-0"] == pytest.approx(50.0) and res["IoU-1"] == pytest.approx(100.0)
    assert res["mIoU"] == pytest.approx(75.0)
    assert res["mACC"] == pytest.approx(75.0)
    assert res["pACC"] == pytest.approx(75.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_classes"):
        SemSegEvaluator(0)
    with pytest.raises(ValueError, match="ignore_label"):
        SemSegEvaluator(3, ignore_label=1)
    with pytest.raises(ValueError, match="class_names"):
        SemSegEvaluator(3, class_names=["a"])
    ev = SemSegEvaluator(3)
    with pytest.raises(ValueError, match=r"\[C=3, H, W\]"):
        ev.process([{"sem_seg": _GT1}], [{"sem_seg": torch.zeros(2, 2, 4)}])
    with pytest.raises(ValueError, match="outside"):
        ev.process([{"sem_seg": np.array([[0, 7]])}], [{"sem_seg": torch.zeros(3, 1, 2)}])
    with pytest.raises(ValueError, match="shape"):
        ev.process([{"sem_seg": np.zeros((2, 2), dtype=np.int64)}], [{"sem_seg": torch.zeros(3, 1, 2)}])
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        ev.process([{}], [{"sem_seg": torch.zeros(3, 1, 2)}])
    res = SemSegEvaluator(2).evaluate()["sem_seg"]
    assert math.isnan(res["mIoU"])
