"""``subsample_labels``: balanced random sampling of positives and negatives (detectron2's semantics)."""

from __future__ import annotations

import torch
from torch import Tensor

from detcore.ops import nonzero_tuple

__all__ = ["subsample_labels"]


def subsample_labels(
    labels: Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[Tensor, Tensor]:
    """Randomly sample up to ``num_samples`` labelled elements, as many positives as allowed first.

    Positives are labels ``!= -1`` and ``!= bg_label``; negatives are ``== bg_label``; -1 is ignored.
    ``min(num_positives, int(positive_fraction * num_samples))`` positives are sampled, then
    ``min(num_negatives, num_samples - num_positives_sampled)`` negatives. Uses ``torch.randperm`` (seed
    with ``torch.manual_seed`` for reproducibility).

    Args:
        labels (Tensor[N] integer): -1 ignore, ``bg_label`` background, anything else foreground.
        num_samples (int): total number of samples wanted.
        positive_fraction (float): maximal fraction of positives, in [0, 1].
        bg_label (int): the background label.

    Returns:
        pos_idx (Tensor[P] int64), neg_idx (Tensor[Q] int64): sampled indices into ``labels``, P + Q <= num_samples.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        got = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D Tensor[N], got {got}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if not (isinstance(positive_fraction, (int, float)) and 0.0 <= positive_fraction <= 1.0):
        raise ValueError(f"positive_fraction must be a float in [0, 1], got {positive_fraction!r}")
    positive = nonzero_tuple((labels != -1) & (labels != bg_label))[0]
    negative = nonzero_tuple(labels == bg_label)[0]

    num_pos = int(num_samples * positive_fraction)
    num_pos = min(positive.numel(), num_pos)
    num_neg = num_samples - num_pos
    num_neg = min(negative.numel(), num_neg)

    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm1], negative[perm2]
