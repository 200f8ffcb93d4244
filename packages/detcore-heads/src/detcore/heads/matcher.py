"""``Matcher``: assigns each prediction (anchor, proposal) to a ground-truth element by match quality."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from detcore.ops import nonzero_tuple

__all__ = ["Matcher"]


class Matcher:
    """Matches each prediction to the ground truth with the highest quality, then labels it by thresholds
    (detectron2's ``Matcher``).

    With ``thresholds=[0.3, 0.7]`` and ``labels=[0, -1, 1]``: best quality in ``[0, 0.3)`` gives 0 (negative),
    ``[0.3, 0.7)`` gives -1 (ignore), ``[0.7, inf)`` gives 1 (positive). Intervals are closed on the left.

    With ``allow_low_quality_matches``, every prediction that has the highest quality with some
    ground-truth element (ties included) is labelled 1, even below the thresholds; its matched index stays
    its own best ground truth (which may be another element of equal quality).

    Args:
        thresholds (list[float]): increasing thresholds, the first > 0.
        labels (list[int]): ``len(thresholds) + 1`` labels in {-1, 0, 1}.
        allow_low_quality_matches (bool): see above (Faster R-CNN's RPN rule).
    """

    def __init__(
        self, thresholds: Sequence[float], labels: Sequence[int], allow_low_quality_matches: bool = False
    ) -> None:
        if (
            isinstance(thresholds, (str, bytes))
            or not isinstance(thresholds, Sequence)
            or len(thresholds) == 0
        ):
            raise TypeError(f"thresholds must be a non-empty list of floats, got {thresholds!r}")
        thresholds = [float(t) for t in thresholds]
        if thresholds[0] <= 0:
            raise ValueError(f"thresholds must start with a value > 0, got {thresholds}")
        thresholds = [-float("inf"), *thresholds, float("inf")]
        if not all(lo <= hi for lo, hi in itertools.pairwise(thresholds)):
            raise ValueError(f"thresholds must be increasing, got {thresholds[1:-1]}")
        labels = [int(lab) for lab in labels]
        if not all(lab in (-1, 0, 1) for lab in labels):
            raise ValueError(f"labels must be in {{-1, 0, 1}}, got {labels}")
        if len(labels) != len(thresholds) - 1:
            raise ValueError(
                f"labels must have len(thresholds) + 1 = {len(thresholds) - 1} entries, got {len(labels)}"
            )
        self.thresholds = thresholds
        self.labels = labels
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(thresholds={self.thresholds[1:-1]}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> tuple[Tensor, Tensor]:
        """Match.

        Args:
            match_quality_matrix (Tensor[M, N]): quality (e.g. IoU, >= 0) of ground truth m with prediction n.

        Returns:
            matches (Tensor[N] int64): matched ground-truth index of each prediction (0 when M == 0).
            match_labels (Tensor[N] int8): label of each prediction (``labels[0]`` for all when M == 0).
        """
        if not isinstance(match_quality_matrix, Tensor):
            raise TypeError(
                f"match_quality_matrix must be a Tensor[M, N], got {type(match_quality_matrix).__name__}"
            )
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"match_quality_matrix must have shape [M, N], got {list(match_quality_matrix.shape)}"
            )
        n = match_quality_matrix.size(1)
        if match_quality_matrix.numel() == 0:
            matches = match_quality_matrix.new_full((n,), 0, dtype=torch.int64)
            match_labels = match_quality_matrix.new_full((n,), self.labels[0], dtype=torch.int8)
            return matches, match_labels
        if (
            match_quality_matrix.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and bool((match_quality_matrix < 0).any())
        ):
            raise ValueError("match_quality_matrix must be >= 0 (e.g. IoU)")

        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            low_high = (matched_vals >= low) & (matched_vals < high)
            match_labels[low_high] = label

        if self.allow_low_quality_matches:
            self.set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    @staticmethod
    def set_low_quality_matches_(match_labels: Tensor, match_quality_matrix: Tensor) -> None:
        """Label 1 every prediction that achieves the highest quality with some ground truth (ties too)."""
        highest_quality_foreach_gt, _ = match_quality_matrix.max(dim=1)
        _, pred_inds_with_highest_quality = nonzero_tuple(
            match_quality_matrix == highest_quality_foreach_gt[:, None]
        )
        match_labels[pred_inds_with_highest_quality] = 1
