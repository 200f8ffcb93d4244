"""Installing the example plugin makes its components available by name; uninstalling removes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _components() -> dict[tuple[str, str], dict]:
    out = subprocess.run(
        [sys.executable, "-m", "detcore.plugins", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return {(c["kind"], c["name"]): c for c in json.loads(out.stdout)["components"]}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, timeout=600)


@pytest.fixture
def installed_example():
    _pip("install", "-q", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    try:
        yield
    finally:
        _pip("uninstall", "-q", "-y", "detcore-plugin-example")


USE_BY_NAME = """
import torch
from detcore.plugins import get_component
from detcore.ops import ShapeSpec
Backbone = get_component("backbone", "tiny_convnet")
net = Backbone(width=8)
feats = net(torch.zeros(2, 3, 64, 96))
shapes = net.output_shape()
assert {k: tuple(v.shape) for k, v in feats.items()} == {"c3": (2, 8, 16, 24), "c4": (2, 16, 8, 12)}, feats.keys()
assert shapes["c4"] == ShapeSpec(channels=16, stride=8), shapes
Heads = get_component("roi_heads", "center_roi_heads")
heads = Heads(shapes["c4"], num_classes=3)
boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 60.0, 50.0]]), torch.zeros(0, 4)]
scores = heads(feats["c4"], boxes)
assert [tuple(s.shape) for s in scores] == [(2, 4), (0, 4)], [s.shape for s in scores]
print("ok")
"""


def test_install_then_uninstall_adds_and_removes_components(installed_example):
    comps = _components()
    backbone = comps[("backbone", "tiny_convnet")]
    assert backbone["distribution"] == "detcore-plugin-example"
    assert backbone["version"] == "0.1.0"
    assert backbone["target"] == "detcore_plugin_example.backbone:TinyConvNet"
    assert comps[("roi_heads", "center_roi_heads")]["distribution"] == "detcore-plugin-example"
    # Built-ins come through the same entry points, with their own distribution.
    assert comps[("kernels", "cpu")]["distribution"] == "detcore-ops"

    # Used by name, with no import of the plugin package in user code.
    result = _run(USE_BY_NAME)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

    _pip("uninstall", "-q", "-y", "detcore-plugin-example")
    try:
        comps = _components()
        assert ("backbone", "tiny_convnet") not in comps
        assert ("roi_heads", "center_roi_heads") not in comps
        result = _run(
            "from detcore.plugins import get_component, UnknownComponentError\n"
            "try:\n    get_component('backbone', 'tiny_convnet')\n"
            "except UnknownComponentError as e:\n    print(e)\n"
        )
        assert result.returncode == 0, result.stderr
        assert "unknown backbone 'tiny_convnet'" in result.stdout
    finally:  # the fixture uninstalls again; reinstall so its teardown has something to remove
        _pip("install", "-q", "--no-deps", "--no-build-isolation", str(EXAMPLE))
