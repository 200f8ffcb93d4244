from __future__ import annotations

import dataclasses

import pytest

import detcore.heads
from detcore.heads import _plugin
from detcore.ops import ShapeSpec
from detcore.plugins import ComponentRegistry, get_component

BUILTINS = {
    ("anchor_generator", "DefaultAnchorGenerator"): detcore.heads.DefaultAnchorGenerator,
    ("anchor_generator", "RotatedAnchorGenerator"): detcore.heads.RotatedAnchorGenerator,
    ("rpn_head", "StandardRPNHead"): detcore.heads.StandardRPNHead,
    ("proposal_generator", "RPN"): detcore.heads.RPN,
}


def test_plugin_registers_kinds_and_builtins_lazily():
    registry = ComponentRegistry()
    _plugin.detcore_register_components(registry)
    assert {"anchor_generator", "proposal_generator", "rpn_head", "roi_heads"} <= set(
        registry.declared_kinds()
    )
    for (kind, name), cls in BUILTINS.items():
        entry = registry.resolve(kind, name)
        assert isinstance(entry.target, str) and ":" in entry.target  # lazy "module:attr"
        assert registry.get(kind, name) is cls


@pytest.mark.parametrize(("kind", "name"), sorted(BUILTINS))
def test_every_builtin_has_frozen_config_and_from_config(kind, name):
    cls = get_component(kind, name)
    assert cls is BUILTINS[(kind, name)]
    cfg = cls.config_class()
    assert dataclasses.is_dataclass(cfg)
    field = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, field, None)
    shapes = [ShapeSpec(channels=8, stride=16)]
    if kind == "proposal_generator":
        module = detcore.heads.build_component(kind, name, cfg, {"res4": shapes[0]})
    elif kind == "rpn_head":
        module = detcore.heads.build_component(kind, name, cfg, shapes, num_anchors=15)
    else:
        module = detcore.heads.build_component(kind, name, cfg, shapes)
    assert isinstance(module, cls)


def test_public_api():
    assert sorted(detcore.heads.__all__) == sorted(set(detcore.heads.__all__))
    for name in detcore.heads.__all__:
        assert hasattr(detcore.heads, name), name
