from __future__ import annotations

import pytest
import torch

from detcore.heads import subsample_labels


def _labels(num_pos: int, num_neg: int, num_ignore: int, seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(num_ignore)]).to(torch.int8)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "exp_pos", "exp_neg"),
    [
        (40, 5000, 40, 216),  # few positives (seed: typically < 100): negatives fill up to 256
        (300, 5000, 128, 128),  # capped at 256 * 0.5
        (128, 5000, 128, 128),
        (0, 5000, 0, 256),
        (300, 50, 128, 50),  # not enough negatives either
        (0, 0, 0, 0),
    ],
)
def test_rpn_counts(num_pos, num_neg, exp_pos, exp_neg):
    labels = _labels(num_pos, num_neg, 700)
    torch.manual_seed(0)
    pos, neg = subsample_labels(labels, 256, 0.5, 0)
    assert pos.numel() == exp_pos == min(num_pos, 128)
    assert neg.numel() == exp_neg
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert pos.unique().numel() == pos.numel() and neg.unique().numel() == neg.numel()
    assert pos.dtype == torch.int64


def test_roi_head_fraction_and_multiclass():
    # ROI heads: labels are class ids, background = num_classes
    labels = torch.tensor([3] * 50 + [0] * 10 + [1] * 10 + [2] * 200 + [-1] * 5)
    pos, neg = subsample_labels(labels, 512, 0.25, bg_label=3)
    assert pos.numel() == 128 and neg.numel() == 50
    assert ((labels[pos] != 3) & (labels[pos] != -1)).all()
    assert (labels[neg] == 3).all()


def test_randomness_follows_torch_seed():
    labels = _labels(500, 5000, 0)
    torch.manual_seed(123)
    a = subsample_labels(labels, 256, 0.5, 0)
    torch.manual_seed(123)
    b = subsample_labels(labels, 256, 0.5, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(7)
    c = subsample_labels(labels, 256, 0.5, 0)
    assert not torch.equal(a[0], c[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        subsample_labels(torch.zeros(2, 2), 4, 0.5, 0)
    with pytest.raises(ValueError, match="positive_fraction"):
        subsample_labels(torch.zeros(4), 4, 1.5, 0)
    with pytest.raises(ValueError, match="num_samples"):
        subsample_labels(torch.zeros(4), -1, 0.5, 0)
