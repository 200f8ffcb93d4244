from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcore.heads import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detcore.heads import poolers as poolers_mod
from detcore.structures import Boxes, RotatedBoxes


def _square(size: float, x0: float = 0.0) -> list[float]:
    return [x0, 0.0, x0 + size, size]


def test_assign_boxes_to_levels_hand_cases():
    boxes = Boxes(
        torch.tensor(
            [
                _square(224),  # canonical: level 4
                _square(112),  # level 3
                _square(448),  # level 5
                _square(223.0),  # just below canonical: level 3
                _square(2000),  # too large: clamped to level 5
                _square(10),  # too small: clamped to level 2
                _square(0),  # empty: level 2
                [0.0, 0.0, 56.0, 56.0],  # level 2
                [0.0, 0.0, 112.0, 448.0],  # sqrt area 224: level 4
            ]
        )
    )
    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [2, 1, 3, 1, 3, 0, 0, 0, 2]
    # formula check against a float64 reference on random boxes
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 500
    wh = torch.rand(300, 2, generator=gen) ** 3 * 900 + 0.5
    rand = Boxes(torch.cat([xy, xy + wh], dim=1))
    ref = torch.floor(4 + torch.log2(torch.sqrt(rand.area().double()) / 224 + 1e-8)).clamp(2, 5).long() - 2
    got = assign_boxes_to_levels([rand[:100], rand[100:]], 2, 5, 224, 4)
    assert (got != ref).sum() <= 1  # float32 vs float64 right at a level boundary at most
    # inverted boxes (negative area) go to the finest level instead of an undefined one
    inverted = Boxes(torch.tensor([[10.0, 0.0, 0.0, 300.0]]))
    assert assign_boxes_to_levels([inverted], 2, 5, 224, 4).tolist() == [0]
    # rotated boxes use w * h
    rot = RotatedBoxes(torch.tensor([[50.0, 50.0, 448.0, 448.0, 30.0], [0.0, 0.0, 20.0, 20.0, -45.0]]))
    assert assign_boxes_to_levels([rot], 2, 5, 224, 4).tolist() == [3, 0]
    # other canonical settings
    assert assign_boxes_to_levels([Boxes(torch.tensor([_square(100)]))], 3, 7, 100, 5).tolist() == [2]


def test_convert_boxes_to_pooler_format():
    b0 = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    b1 = Boxes(torch.zeros(0, 4))
    b2 = Boxes(torch.tensor([[9.0, 10.0, 11.0, 12.0]]))
    out = convert_boxes_to_pooler_format([b0, b1, b2])
    assert out.tolist() == [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [2, 9, 10, 11, 12]]
    rot = convert_boxes_to_pooler_format([RotatedBoxes(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]))] * 2)
    assert rot.tolist() == [[0, 1, 2, 3, 4, 5], [1, 1, 2, 3, 4, 5]]


class _TorchvisionAlign(torch.nn.Module):
    """torchvision's RoIAlign, standing in for detcore's op to test the pooler's level dispatch."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned):
        super().__init__()
        self.args = (output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, x, rois):
        return torchvision.ops.roi_align(x, rois, *self.args)


@pytest.fixture
def torchvision_poolers(monkeypatch):
    def fake(pooler_type, output_size, scale, sampling_ratio):
        assert pooler_type in ("ROIAlign", "ROIAlignV2")
        return _TorchvisionAlign(output_size, scale, sampling_ratio, pooler_type == "ROIAlignV2")

    monkeypatch.setattr(poolers_mod, "_level_pooler", fake)


def _pyramid(batch: int, channels: int = 3, size: int = 256, gen=None):
    return [torch.randn(batch, channels, size // 2**k, size // 2**k, generator=gen) for k in range(2, 6)]


def _random_box_lists(gen, counts):
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=gen) * 200
        size = 2.0 ** (torch.rand(n, 1, generator=gen) * 6 + 3)  # 8 .. 512 px: every level
        wh = size * (0.5 + torch.rand(n, 2, generator=gen))
        out.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    return out


def test_forward_dispatches_per_level(torchvision_poolers):
    gen = torch.Generator().manual_seed(0)
    pooler = ROIPooler(7, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 0, "ROIAlignV2")
    assert (pooler.min_level, pooler.max_level) == (2, 5)
    x = _pyramid(3, gen=gen)
    box_lists = _random_box_lists(gen, [16, 0, 15])
    # one box per level in image 0 at least
    box_lists[0] = Boxes.cat(
        [box_lists[0], Boxes(torch.tensor([_square(s, 10.0) for s in (50, 150, 300, 600)]))]
    )
    out = pooler(x, box_lists)
    assert out.shape == (35, 3, 7, 7)
    rois = convert_boxes_to_pooler_format(box_lists)
    levels = assign_boxes_to_levels(box_lists, 2, 5, 224, 4)
    assert len(levels.unique()) == 4
    for i in range(35):
        lvl = int(levels[i])
        ref = torchvision.ops.roi_align(x[lvl], rois[i : i + 1], (7, 7), 2.0 ** -(lvl + 2), 0, True)
        torch.testing.assert_close(out[i : i + 1], ref)
    # one level: every box from it
    single = ROIPooler((4, 6), [1 / 8], 2, "ROIAlign")
    out1 = single([x[1]], box_lists)
    torch.testing.assert_close(out1, torchvision.ops.roi_align(x[1], rois, (4, 6), 1 / 8, 2, False))
    # empty batch
    empty = pooler([t[:0] for t in x], [])
    assert empty.shape == (0, 3, 7, 7)
    # gradients reach every level that has boxes
    xg = [t.clone().requires_grad_(True) for t in x]
    pooler(xg, box_lists).sum().backward()
    for lvl, t in enumerate(xg):
        assert t.grad is not None
        assert (t.grad.abs().sum() > 0) == bool((levels == lvl).any())


def test_bad_arguments(torchvision_poolers):
    with pytest.raises(ValueError, match="pooler_type"):
        ROIPooler(7, [1 / 4], 0, "ROIAlignV3")
    with pytest.raises(ValueError, match="power-of-2"):
        ROIPooler(7, [1 / 3], 0, "ROIAlign")
    with pytest.raises(ValueError, match="pyramid"):
        ROIPooler(7, [1 / 4, 1 / 16], 0, "ROIAlign")
    with pytest.raises(ValueError, match="output_size"):
        ROIPooler((7, 7, 7), [1 / 4], 0, "ROIAlign")
    pooler = ROIPooler(7, [1 / 4, 1 / 8], 0, "ROIAlignV2")
    x = [torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 8, 8)]
    boxes = [Boxes(torch.zeros(1, 4))] * 2
    with pytest.raises(ValueError, match="one feature map per pooler level"):
        pooler(x[:1], boxes)
    with pytest.raises(ValueError, match="box_lists must have one entry per image"):
        pooler(x, boxes[:1])
    with pytest.raises(TypeError, match="lists"):
        pooler(tuple(x), boxes)
    with pytest.raises(TypeError, match="Boxes"):
        pooler(x, [torch.zeros(1, 4)] * 2)
    assert math.isclose(pooler.scales[1], 1 / 8)


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign", "ROIPool"])
def test_forward_with_detcore_ops_matches_direct_per_level(pooler_type):
    from detcore import ops

    gen = torch.Generator().manual_seed(1)
    pooler = ROIPooler(5, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 2, pooler_type)
    x = _pyramid(2, gen=gen)
    box_lists = _random_box_lists(gen, [12, 9])
    box_lists[1] = Boxes.cat(
        [box_lists[1], Boxes(torch.tensor([_square(s, 10.0) for s in (50, 150, 300, 600)]))]
    )
    out = pooler(x, box_lists)
    rois = convert_boxes_to_pooler_format(box_lists)
    levels = assign_boxes_to_levels(box_lists, 2, 5, 224, 4)
    assert len(levels.unique()) == 4
    expected = torch.zeros_like(out)
    for lvl in range(4):
        sel = (levels == lvl).nonzero().squeeze(1)
        scale = 2.0 ** -(lvl + 2)
        if pooler_type == "ROIPool":
            direct = ops.roi_pool(x[lvl], rois[sel], 5, scale)
            tv = torchvision.ops.roi_pool(x[lvl], rois[sel], 5, scale)
        else:
            aligned = pooler_type == "ROIAlignV2"
            direct = ops.roi_align(x[lvl], rois[sel], 5, scale, 2, aligned)
            tv = torchvision.ops.roi_align(x[lvl], rois[sel], 5, scale, 2, aligned)
        expected[sel] = direct
        torch.testing.assert_close(direct, tv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_rotated_pooler_matches_direct_per_level():
    from detcore import ops

    gen = torch.Generator().manual_seed(2)
    pooler = ROIPooler((3, 4), [1 / 8, 1 / 16], 0, "ROIAlignRotated")
    x = [torch.randn(2, 4, 32, 32, generator=gen), torch.randn(2, 4, 16, 16, generator=gen)]
    rot = [
        RotatedBoxes(torch.tensor([[60.0, 70.0, 40.0, 30.0, 30.0], [100.0, 100.0, 400.0, 300.0, -60.0]])),
        RotatedBoxes(torch.tensor([[128.0, 128.0, 500.0, 500.0, 90.0]])),
    ]
    out = pooler(x, rot)
    rois = convert_boxes_to_pooler_format(rot)
    levels = assign_boxes_to_levels(rot, 3, 4, 224, 4)
    assert levels.tolist() == [0, 1, 1]
    torch.testing.assert_close(out[:1], ops.roi_align_rotated(x[0], rois[:1], (3, 4), 1 / 8, 0))
    torch.testing.assert_close(out[1:], ops.roi_align_rotated(x[1], rois[1:], (3, 4), 1 / 16, 0))
    with pytest.raises(TypeError, match="RotatedBoxes"):
        pooler(x, [Boxes(torch.zeros(1, 4))] * 2)
