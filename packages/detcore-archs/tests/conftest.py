from __future__ import annotations

import pytest

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


@pytest.fixture(scope="session")
def golden_dir(reference_dir):
    """``../shared/reference/golden/mask_rcnn_tiny`` (fails, never skips, when it is missing)."""
    d = reference_dir / "golden" / "mask_rcnn_tiny"
    if not (d / "model.pth").is_file():
        pytest.fail("mask_rcnn_tiny golden data not found beside the checkout")
    return d
