"""Building components by name through the plugin registry (detectron2's ``build_*`` functions).

A registered component is either a class with ``from_config(cfg, input_shape, **extra) -> kwargs`` (every
built-in of detcore.heads) or a factory ``f(cfg, input_shape, **extra) -> module``. Each built-in class
names its frozen config dataclass in ``config_class``; ``cfg=None`` means that class's defaults.
"""

from __future__ import annotations

from typing import Any

from detcore.plugins import get_component

__all__ = [
    "build_anchor_generator",
    "build_component",
    "build_proposal_generator",
    "build_rpn_head",
]


def build_component(kind: str, name: str, cfg: Any, input_shape: Any, **extra: Any) -> Any:
    """Build component ``name`` of ``kind`` from its config and input shape.

    Args:
        kind: component kind, e.g. "anchor_generator".
        name: registered name, e.g. "DefaultAnchorGenerator".
        cfg: the component's config (its ``config_class`` instance), or None for its defaults.
        input_shape: what the component is built on (a list or dict of ShapeSpec, per kind).
        **extra: extra keyword arguments the kind defines (e.g. ``num_anchors`` for "rpn_head").

    Returns:
        The built component (usually an ``nn.Module``).
    """
    target = get_component(kind, name)
    from_config = getattr(target, "from_config", None)
    if from_config is not None:
        return target(**from_config(cfg, input_shape, **extra))
    return target(cfg, input_shape, **extra)


def build_anchor_generator(cfg: Any, input_shape: Any, name: str = "DefaultAnchorGenerator") -> Any:
    """Build an "anchor_generator" component on the ShapeSpecs (strides) of the feature maps it serves."""
    return build_component("anchor_generator", name, cfg, input_shape)


def build_rpn_head(
    cfg: Any, input_shape: Any, *, num_anchors: int, box_dim: int = 4, name: str = "StandardRPNHead"
) -> Any:
    """Build an "rpn_head" component; ``num_anchors``/``box_dim`` come from the anchor generator."""
    return build_component("rpn_head", name, cfg, input_shape, num_anchors=num_anchors, box_dim=box_dim)


def build_proposal_generator(cfg: Any, input_shape: Any, name: str = "RPN") -> Any:
    """Build a "proposal_generator" on a dict of ShapeSpecs; "PrecomputedProposals" gives None (proposals
    then come with the inputs), as in detectron2."""
    return build_component("proposal_generator", name, cfg, input_shape)
