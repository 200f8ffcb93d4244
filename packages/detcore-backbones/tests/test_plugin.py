"""The built-in backbones are found through the plugin registry, like a third party's."""

from __future__ import annotations

import pytest
import torch

from detcore.backbones import FPN, ResNet, ResNetConfig, ResNetFPNConfig
from detcore.ops import ShapeSpec
from detcore.plugins import get_component, reset_plugin_manager


@pytest.fixture(autouse=True)
def _fresh_manager():
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_builtin_backbones_registered():
    build = get_component("backbone", "resnet")
    with torch.device("meta"):
        c4 = build(ResNetConfig(), ShapeSpec(channels=3))
        fpn = get_component("backbone", "resnet_fpn")(ResNetFPNConfig.base_rcnn_fpn(), ShapeSpec(channels=3))
        retina = get_component("backbone", "retinanet_resnet_fpn")(
            ResNetFPNConfig.base_retinanet(), ShapeSpec(channels=3)
        )
    assert isinstance(c4, ResNet) and list(c4.output_shape()) == ["res4"]
    assert isinstance(fpn, FPN) and list(fpn.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert list(retina.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
