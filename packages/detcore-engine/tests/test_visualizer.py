"""Visualizer: drawing changes the right pixels, PNGs are written, colours are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.engine.visualizer import VisImage, Visualizer, color_for
from detcore.structures import Boxes, Instances


def _image(h=64, w=80):
    return np.full((h, w, 3), 40, dtype=np.uint8)


def _instances(h=64, w=80, with_masks=True, with_kpts=True):
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[5.0, 30.0, 30.0, 60.0], [40.0, 10.0, 75.0, 50.0]]))
    inst.scores = torch.tensor([0.9, 0.55])
    inst.pred_classes = torch.tensor([0, 1])
    if with_masks:
        m = torch.zeros(2, h, w, dtype=torch.bool)
        m[0, 40:55, 10:25] = True
        m[1, 20:45, 50:70] = True
        inst.pred_masks = m
    if with_kpts:
        inst.pred_keypoints = torch.tensor(
            [[[10.0, 35.0, 0.9], [25.0, 55.0, 0.8], [12.0, 50.0, 0.01]], [[45.0, 15.0, 0.9], [70.0, 45.0, 0.9], [60.0, 30.0, 0.9]]]
        )  # fmt: skip
    return inst


_META = {
    "thing_classes": ["cat", "dog"],
    "keypoint_names": ["a", "b", "c"],
    "keypoint_connection_rules": [("a", "b", (255, 0, 0)), ("a", "c", (0, 0, 255))],
}


def test_draw_instance_predictions_changes_pixels_in_boxes_and_masks(tmp_path):
    img = _image()
    vis = Visualizer(img, _META)
    out = vis.draw_instance_predictions(_instances(with_kpts=False))
    assert isinstance(out, VisImage)
    drawn = out.get_image()
    assert drawn.shape == img.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(img, _image())  # the input is not modified
    changed = (drawn != img).any(axis=2)
    # mask interiors are blended with the class colour at alpha 0.5
    for cls, (ys, xs) in enumerate([(slice(47, 54), slice(11, 24)), (slice(30, 44), slice(51, 69))]):
        region = drawn[ys, xs].reshape(-1, 3).astype(int)
        col = np.array(color_for(cls))
        expected = np.round(40 * 0.5 + col * 0.5)
        # the region is the plain blend (the label of instance 0 may cover some of its pixels)
        frac = np.mean(np.all(np.abs(region - expected) <= 1, axis=1))
        assert frac > 0.8, (cls, frac)
    # box outlines are drawn in the class colours
    assert changed[45, 5] and changed[30, 60]
    assert tuple(drawn[59, 18]) == color_for(0) or tuple(drawn[60, 18]) == color_for(0)
    # far from every box, mask and label nothing changes
    assert not changed[0:5, 0:35].any()
    assert not changed[55:64, 35:80].any()
    path = out.save(tmp_path / "sub" / "vis.png")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["vis.png"]
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), drawn)


def test_keypoints_and_skeleton():
    img = _image()
    inst = _instances(with_masks=False)
    plain = Visualizer(img, {"thing_classes": ["cat", "dog"]}).draw_instance_predictions(inst).get_image()
    with_rules = Visualizer(img, _META).draw_instance_predictions(inst).get_image()
    # the skeleton line a-b of instance 0 runs from (10, 35) to (25, 55): its midpoint is red only with rules
    assert tuple(with_rules[45, 17]) == (255, 0, 0) or tuple(with_rules[45, 18]) == (255, 0, 0)
    assert tuple(plain[45, 17]) != (255, 0, 0)
    # keypoint c of instance 0 has score 0.01: neither the point nor the a-c line is drawn
    assert not (with_rules[49:52, 11:14] == np.array(color_for(0))).all(axis=2).any()
    assert not (with_rules[:, :35] == (0, 0, 255)).all(axis=2).any()
    assert (with_rules[:, 40:] == (0, 0, 255)).all(axis=2).any()  # instance 1's a-c line is drawn
    # keypoints of instance 1 are dots in its colour
    assert tuple(with_rules[30, 60]) == color_for(1)


def test_colours_are_deterministic_and_metadata_colours_win():
    img = _image()
    a = Visualizer(img, _META).draw_instance_predictions(_instances()).get_image()
    b = Visualizer(img, _META).draw_instance_predictions(_instances()).get_image()
    np.testing.assert_array_equal(a, b)
    assert len({color_for(i) for i in range(80)}) == 80
    meta = {**_META, "thing_colors": [(255, 255, 0), (0, 255, 255)]}
    c = Visualizer(img, meta).draw_instance_predictions(_instances(with_kpts=False)).get_image()
    assert tuple(c[47, 17]) == (148, 148, 20)  # 40 * 0.5 + (255, 255, 0) * 0.5, rounded half to even


def test_empty_instances_and_scale(tmp_path):
    img = _image()
    out = Visualizer(img, _META).draw_instance_predictions(Instances((64, 80)))
    np.testing.assert_array_equal(out.get_image(), img)
    empty = _instances()[torch.zeros(2, dtype=torch.bool)]
    np.testing.assert_array_equal(Visualizer(img).draw_instance_predictions(empty).get_image(), img)
    big = Visualizer(img, _META, scale=2.0).draw_instance_predictions(_instances()).get_image()
    assert big.shape == (128, 160, 3)
    assert (big[82:108, 22:48] != 40).any(axis=2).mean() > 0.9  # mask 0 at twice the size
    # only classes (no names), no scores
    inst = Instances(
        (64, 80), pred_boxes=Boxes(torch.tensor([[1.0, 1.0, 20.0, 20.0]])), pred_classes=torch.tensor([7])
    )
    Visualizer(img).draw_instance_predictions(inst).save(tmp_path / "x.png")


def test_draw_sem_seg():
    img = _image(20, 30)
    seg = np.full((20, 30), 255, dtype=np.int64)
    seg[:, :10] = 0
    seg[:, 20:] = 2
    out = Visualizer(img, {"stuff_colors": [(200, 0, 0), (0, 0, 0), (0, 200, 0)]}).draw_sem_seg(
        seg, alpha=0.5
    )
    drawn = out.get_image()
    np.testing.assert_array_equal(drawn[:5, 10:20], img[:5, 10:20])  # ignored pixels (away from the labels)
    # blended class colours (labels cover the middle rows)
    assert tuple(drawn[0, 0]) == (120, 20, 20) and tuple(drawn[19, 29]) == (20, 120, 20)
    logits = torch.nn.functional.one_hot(torch.from_numpy(np.where(seg == 255, 1, seg)), 3).permute(2, 0, 1)
    Visualizer(img).draw_sem_seg(logits.float())
    with pytest.raises(ValueError, match="sem_seg"):
        Visualizer(img).draw_sem_seg(np.zeros((3, 3), dtype=np.int64))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        Visualizer(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        Visualizer(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="scale"):
        Visualizer(_image(), scale=0)
    with pytest.raises(ValueError, match="mask"):
        Visualizer(_image()).draw_binary_mask(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="keypoints"):
        Visualizer(_image()).draw_and_connect_keypoints(np.zeros((3, 2)))
