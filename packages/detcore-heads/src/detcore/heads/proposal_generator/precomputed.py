"""The "PrecomputedProposals" proposal generator: none at all (detectron2's MODEL.LOAD_PROPOSALS)."""

from __future__ import annotations

from typing import Any

__all__ = ["precomputed_proposals"]


def precomputed_proposals(cfg: Any, input_shape: Any, **extra: Any) -> None:
    """Factory registered as ("proposal_generator", "PrecomputedProposals").

    Returns None: the meta-architecture then reads proposals from each input dict's "proposals" field
    (Instances with proposal_boxes and objectness_logits), as detectron2 does.
    """
    return None


precomputed_proposals.config_class = None  # takes no configuration
