"""ShapeSpec: keyword-only frozen dataclass with detectron2's four fields."""

from __future__ import annotations

import dataclasses

import pytest

from detcore.ops import ShapeSpec


def test_fields_defaults_and_keywords():
    assert [f.name for f in dataclasses.fields(ShapeSpec)] == ["channels", "height", "width", "stride"]
    s = ShapeSpec()
    assert (s.channels, s.height, s.width, s.stride) == (None, None, None, None)
    s = ShapeSpec(channels=256, stride=4)
    assert (s.channels, s.height, s.width, s.stride) == (256, None, None, 4)
    assert ShapeSpec(channels=3, height=5, width=7, stride=2) == ShapeSpec(
        stride=2, width=7, height=5, channels=3
    )
    assert hash(ShapeSpec(channels=1)) == hash(ShapeSpec(channels=1))
    assert dataclasses.replace(s, channels=512) == ShapeSpec(channels=512, stride=4)


def test_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        ShapeSpec(256)  # type: ignore[misc]
    s = ShapeSpec(channels=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.channels = 16  # type: ignore[misc]
