"""detcore.heads: anchors, box coders, matcher, sampling, poolers, RPN, ROI heads, dense heads."""

__all__: list[str] = []
