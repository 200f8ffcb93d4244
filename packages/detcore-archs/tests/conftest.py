from __future__ import annotations

from pathlib import Path

import pytest


def _find_shared() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent.parent / "shared"
        if (candidate / "reference").is_dir():
            return candidate
        candidate = parent / "shared"
        if (candidate / "reference").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    shared = _find_shared()
    if shared is None:
        pytest.skip("shared/reference (detectron2 golden data) not found next to the repository")
    return shared / "reference"


TINY_OVERRIDES = [
    "model.backbone.resnet.stem_out_channels=16",
    "model.backbone.resnet.res2_out_channels=32",
    "model.backbone.resnet.width_per_group=8",
    "model.backbone.fpn.out_channels=64",
    "model.roi_heads.box_head.fc_dim=128",
    "model.roi_heads.mask_head.conv_dim=64",
    "model.roi_heads.num_classes=3",
    "input.min_size_test=256",
    "input.max_size_test=384",
]


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Overrides of the named mask_rcnn_R_50_FPN config giving the golden mask_rcnn_tiny model (its README)."""
    return list(TINY_OVERRIDES)
