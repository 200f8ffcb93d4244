"""Proposal generators: the RPN and its proposal selection."""

from detcore.heads.proposal_generator.proposal_utils import find_top_rpn_proposals, select_proposals_per_image
from detcore.heads.proposal_generator.rpn import RPN, RPNConfig, StandardRPNHead, StandardRPNHeadConfig

__all__ = [
    "RPN",
    "RPNConfig",
    "StandardRPNHead",
    "StandardRPNHeadConfig",
    "find_top_rpn_proposals",
    "select_proposals_per_image",
]
