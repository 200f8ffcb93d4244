from __future__ import annotations

import pytest
import torch

from detcore.heads import Matcher


def _ref_match(iou: torch.Tensor, thresholds, labels, low_quality: bool):
    """Loop reference written from the documented rules."""
    m, n = iou.shape
    matches, out = [], []
    bounds = [-float("inf"), *thresholds, float("inf")]
    for j in range(n):
        col = iou[:, j].tolist()
        best = max(col)
        matches.append(col.index(best))
        for lab, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
            if lo <= best < hi:
                out.append(lab)
    if low_quality:
        for i in range(m):
            row = iou[i].tolist()
            best = max(row)
            for j in range(n):
                if row[j] == best:
                    out[j] = 1
    return torch.tensor(matches), torch.tensor(out, dtype=torch.int8)


def test_rpn_thresholds_hand_case():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    iou = torch.tensor(
        [
            [0.0, 0.29, 0.3, 0.69, 0.7, 0.95, 0.1],
            [0.1, 0.05, 0.0, 0.8, 0.0, 0.2, 0.0],
        ]
    )
    matches, labels = matcher(iou)
    assert matches.tolist() == [1, 0, 0, 1, 0, 0, 0]
    assert labels.tolist() == [0, 0, -1, 1, 1, 1, 0]
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8


def test_low_quality_matches_include_ties():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    # gt 0's best IoU is 0.4, reached by predictions 1 and 3 (a tie); gt 1's best is 0.9 (prediction 2)
    iou = torch.tensor(
        [
            [0.1, 0.4, 0.2, 0.4, 0.0],
            [0.0, 0.1, 0.9, 0.5, 0.2],
        ]
    )
    matches, labels = matcher(iou)
    assert labels.tolist() == [0, 1, 1, 1, 0]
    # prediction 3 is promoted by gt 0, but its matched index stays its own argmax (gt 1)
    assert matches.tolist() == [0, 0, 1, 1, 1]
    no_lq = Matcher([0.3, 0.7], [0, -1, 1])(iou)[1]
    assert no_lq.tolist() == [0, -1, 1, -1, 0]


def test_low_quality_zero_iou_gt():
    # detectron2 quirk kept: a gt overlapping nothing makes every prediction with IoU 0 to it a low-quality match
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.8, 0.0]])
    _, labels = matcher(iou)
    assert labels.tolist() == [1, 1, 1]


def test_empty_gt_and_empty_predictions():
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(torch.zeros(0, 5))
    assert matches.tolist() == [0] * 5 and labels.tolist() == [0] * 5
    assert labels.dtype == torch.int8
    roi = Matcher([0.5], [0, 1])
    matches, labels = roi(torch.zeros(0, 3))
    assert labels.tolist() == [0, 0, 0]
    matches, labels = matcher(torch.zeros(3, 0))
    assert matches.shape == (0,) and labels.shape == (0,)


@pytest.mark.parametrize("low_quality", [False, True])
def test_random_vs_reference(low_quality):
    gen = torch.Generator().manual_seed(0)
    # quantised IoUs (exact in binary) so that ties and values on the thresholds happen
    iou = torch.randint(0, 9, (6, 40), generator=gen).float() / 8
    thresholds, labels = [0.25, 0.75], [0, -1, 1]
    m = Matcher(thresholds, labels, allow_low_quality_matches=low_quality)
    matches, out = m(iou)
    _ref_matches, ref_labels = _ref_match(iou, thresholds, labels, low_quality)
    assert torch.equal(out, ref_labels)
    # matched index: any gt with the maximal IoU is acceptable on ties
    assert torch.equal(iou[matches, torch.arange(40)], iou.max(dim=0).values)
    roi = Matcher([0.5], [0, 1])
    _, out = roi(iou)
    assert torch.equal(out, _ref_match(iou, [0.5], [0, 1], False)[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="thresholds"):
        Matcher([0.0, 0.7], [0, -1, 1])
    with pytest.raises(ValueError, match="increasing"):
        Matcher([0.7, 0.3], [0, -1, 1])
    with pytest.raises(ValueError, match="labels"):
        Matcher([0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        Matcher([0.5], [0, 2])
    m = Matcher([0.5], [0, 1])
    with pytest.raises(ValueError, match="match_quality_matrix"):
        m(torch.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        m(torch.tensor([[-0.5, 0.2]]))
