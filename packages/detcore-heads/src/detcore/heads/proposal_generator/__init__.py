"""Proposal generators: the RPN and its proposal selection."""

from detcore.heads.proposal_generator.proposal_utils import find_top_rpn_proposals, select_proposals_per_image
from detcore.heads.proposal_generator.rpn import RPN, RPNConfig, StandardRPNHead, StandardRPNHeadConfig
from detcore.heads.proposal_generator.rrpn import RRPN, RRPNConfig, find_top_rrpn_proposals

__all__ = [
    "RPN",
    "RRPN",
    "RPNConfig",
    "RRPNConfig",
    "StandardRPNHead",
    "StandardRPNHeadConfig",
    "find_top_rpn_proposals",
    "find_top_rrpn_proposals",
    "select_proposals_per_image",
]
