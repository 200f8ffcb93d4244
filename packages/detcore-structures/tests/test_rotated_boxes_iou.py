"""RotatedBoxes pairwise IoU: needs ``detcore.ops.box_iou_rotated`` (checked against detectron2 golden data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcore.structures import RotatedBoxes, pairwise_iou_rotated
from detcore.structures.rotated_boxes import pairwise_iou


def _shared() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "reference").is_dir():
            return parent / "shared"
        if (parent.parent / "shared" / "reference").is_dir():
            return parent.parent / "shared"
    raise FileNotFoundError("cannot find the shared/reference directory above " + str(Path(__file__)))


GOLDEN = _shared() / "reference" / "golden" / "ops"


def test_pairwise_iou_rotated_golden():
    data = np.load(GOLDEN / "box_iou_rotated.npz")
    b1 = RotatedBoxes(torch.from_numpy(data["boxes1"]))
    b2 = RotatedBoxes(torch.from_numpy(data["boxes2"]))
    iou = pairwise_iou_rotated(b1, b2)
    assert iou.shape == (70, 50)
    torch.testing.assert_close(iou, torch.from_numpy(data["iou"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pairwise_iou(b1, b2), iou)


def test_pairwise_iou_rotated_edge_golden():
    data = np.load(GOLDEN / "box_iou_rotated_edge.npz")
    a = RotatedBoxes(torch.from_numpy(data["pairs_a"]))
    b = RotatedBoxes(torch.from_numpy(data["pairs_b"]))
    torch.testing.assert_close(
        pairwise_iou_rotated(a, b), torch.from_numpy(data["pairs_iou_matrix"]), atol=1e-5, rtol=0
    )
    assert pairwise_iou_rotated(RotatedBoxes([]), b).shape == (0, 22)


def test_pairwise_iou_rotated_errors():
    with pytest.raises(TypeError, match="boxes1 must be RotatedBoxes"):
        pairwise_iou_rotated(torch.zeros(2, 4), RotatedBoxes([]))
