from __future__ import annotations

import math

import pytest
import torch

from detcore.heads import (
    DefaultAnchorGenerator,
    DefaultAnchorGeneratorConfig,
    RotatedAnchorGenerator,
    RotatedAnchorGeneratorConfig,
)
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, RotatedBoxes

FPN_STRIDES = [4, 8, 16, 32, 64]
FPN_GRIDS = [(200, 320), (100, 160), (50, 80), (25, 40), (13, 20)]  # 800x1280 input, seed 003


def _fpn_generator() -> DefaultAnchorGenerator:
    return DefaultAnchorGenerator.build(
        DefaultAnchorGeneratorConfig.base_rcnn_fpn(), [ShapeSpec(stride=s) for s in FPN_STRIDES]
    )


def test_cell_anchors_match_seed():
    gen = _fpn_generator()
    # printed in seed 003 ("cell anchors for P2, P3, P4, P5 and P6")
    expected_p2 = torch.tensor(
        [
            [-22.6274, -11.3137, 22.6274, 11.3137],
            [-16.0, -16.0, 16.0, 16.0],
            [-11.3137, -22.6274, 11.3137, 22.6274],
        ]
    )
    torch.testing.assert_close(gen.cell_anchors[0], expected_p2, atol=1e-4, rtol=0)
    expected_p6 = torch.tensor(
        [
            [-362.0387, -181.0193, 362.0387, 181.0193],
            [-256.0, -256.0, 256.0, 256.0],
            [-181.0193, -362.0387, 181.0193, 362.0387],
        ]
    )
    torch.testing.assert_close(gen.cell_anchors[4], expected_p6, atol=1e-4, rtol=0)
    for level, size in enumerate([32, 64, 128, 256, 512]):
        cells = gen.cell_anchors[level].double()
        w = cells[:, 2] - cells[:, 0]
        h = cells[:, 3] - cells[:, 1]
        torch.testing.assert_close(
            w * h, torch.full((3,), float(size) ** 2, dtype=torch.float64), rtol=1e-5, atol=0
        )
        torch.testing.assert_close(
            h / w, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), rtol=1e-5, atol=0
        )
        assert gen.cell_anchors[level].dtype == torch.float32


def test_grid_anchors_count_and_placement():
    gen = _fpn_generator()
    feats = [torch.zeros(1, 1, h, w) for h, w in FPN_GRIDS]
    anchors = gen(feats)
    assert all(isinstance(a, Boxes) for a in anchors)
    assert [len(a) for a in anchors] == [h * w * 3 for h, w in FPN_GRIDS]
    assert sum(len(a) for a in anchors) == 255_780
    assert len(anchors[4]) == 780  # seed: 13 x 20 x 3 anchors on P6
    # P6 position (row 5, col 5) is (320, 320) in the image; its square anchor is 512 x 512
    p6 = anchors[4].tensor.view(13, 20, 3, 4)
    torch.testing.assert_close(
        p6[5, 5, 1], torch.tensor([320 - 256.0, 320 - 256.0, 320 + 256.0, 320 + 256.0])
    )
    # reference: every anchor equals cell anchor + (x * stride, y * stride), (row, col, anchor) order
    for (h, w), stride, a, cells in zip(FPN_GRIDS, FPN_STRIDES, anchors, gen.cell_anchors):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
        )
        shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4) * stride
        ref = (shifts + cells.double()[None]).reshape(-1, 4)
        torch.testing.assert_close(a.tensor.double(), ref, atol=1e-4, rtol=0)


def test_offset_and_properties():
    gen = DefaultAnchorGenerator(sizes=[[32, 64]], aspect_ratios=[[1.0]], strides=[8], offset=0.5)
    assert gen.num_anchors == [2] and gen.num_cell_anchors == [2] and gen.box_dim == 4
    (a,) = gen([torch.zeros(2, 3, 2, 3)])
    assert len(a) == 2 * 3 * 2
    torch.testing.assert_close(a.tensor[0], torch.tensor([4 - 16.0, 4 - 16.0, 4 + 16.0, 4 + 16.0]))
    torch.testing.assert_close(a.tensor[-1], torch.tensor([20 - 32.0, 12 - 32.0, 20 + 32.0, 12 + 32.0]))
    # flat lists broadcast to every level
    gen2 = DefaultAnchorGenerator(sizes=[32, 64], aspect_ratios=[0.5, 1.0, 2.0], strides=[4, 8])
    assert gen2.num_anchors == [6, 6]
    assert gen2.offset == 0.0


def test_no_anchors_in_state_dict(reference_dir):
    gen = _fpn_generator()
    assert list(gen.state_dict().keys()) == []
    assert [n for n, _ in gen.named_buffers()] == [f"cell_anchors.{i}" for i in range(5)]
    for path in (reference_dir / "detectron2-state-dicts").glob("*.txt"):
        assert "cell_anchors" not in path.read_text()
    gen = gen.to(torch.float64)
    assert gen.cell_anchors[0].dtype == torch.float64
    assert gen([torch.zeros(1, 1, 2, 2)] * 5)[0].tensor.dtype == torch.float64


def test_config_defaults_and_frozen():
    cfg = DefaultAnchorGeneratorConfig()
    assert cfg.sizes == ((32.0, 64.0, 128.0, 256.0, 512.0),)
    assert cfg.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert cfg.offset == 0.0
    with pytest.raises(AttributeError):
        cfg.offset = 0.5  # type: ignore[misc]
    assert DefaultAnchorGeneratorConfig(sizes=[[1, 2]]).sizes == ((1, 2),)
    rcfg = RotatedAnchorGeneratorConfig()
    assert rcfg.angles == ((-90.0, 0.0, 90.0),)
    # defaults build a single-level generator with 15 anchors per position
    gen = DefaultAnchorGenerator.build(None, [ShapeSpec(stride=16)])
    assert gen.num_anchors == [15]


def test_bad_inputs():
    with pytest.raises(ValueError, match="sizes"):
        DefaultAnchorGenerator(sizes=[[32], [64]], aspect_ratios=[1.0], strides=[4, 8, 16])
    with pytest.raises(ValueError, match="offset"):
        DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[4], offset=1.0)
    with pytest.raises(ValueError, match="strides"):
        DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[0])
    gen = DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[4, 8])
    with pytest.raises(ValueError, match="features"):
        gen([torch.zeros(1, 1, 2, 2)])
    with pytest.raises(TypeError, match="features"):
        gen(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="stride"):
        DefaultAnchorGenerator.build(None, [ShapeSpec(channels=3)])


def test_rotated_anchor_generator():
    gen = RotatedAnchorGenerator(
        sizes=[[32]], aspect_ratios=[[0.5, 1.0]], strides=[16], angles=[[-90, 0, 90]]
    )
    assert gen.num_anchors == [6] and gen.box_dim == 5
    cells = gen.cell_anchors[0]
    w = math.sqrt(32**2 / 0.5)
    expected = torch.tensor(
        [[0, 0, w, 0.5 * w, a] for a in (-90.0, 0.0, 90.0)]
        + [[0, 0, 32.0, 32.0, a] for a in (-90.0, 0.0, 90.0)]
    )
    torch.testing.assert_close(cells, expected)
    (a,) = gen([torch.zeros(1, 1, 2, 3)])
    assert isinstance(a, RotatedBoxes) and len(a) == 2 * 3 * 6
    grid = a.tensor.view(2, 3, 6, 5)
    torch.testing.assert_close(grid[1, 2, :, 0], torch.full((6,), 32.0))
    torch.testing.assert_close(grid[1, 2, :, 1], torch.full((6,), 16.0))
    torch.testing.assert_close(grid[1, 2, :, 2:], cells[:, 2:])
    assert list(gen.state_dict().keys()) == []
    built = RotatedAnchorGenerator.build(None, [ShapeSpec(stride=8)])
    assert built.num_anchors == [45]
