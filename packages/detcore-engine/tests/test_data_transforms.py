from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from detcore.engine.data import create_keypoint_hflip_indices, transform_instance_annotations
from detcore.engine.data import transforms as T
from detcore.structures import BoxMode


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


def _img(h=20, w=40, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def test_hflip_image_box_polygon():
    t = T.HFlipTransform(100)
    np.testing.assert_allclose(t.apply_box(np.array([[10.0, 20, 30, 60]])), [[70, 20, 90, 60]])
    img = _img()
    np.testing.assert_array_equal(T.HFlipTransform(40).apply_image(img), img[:, ::-1])
    (poly,) = t.apply_polygons([np.array([[0.0, 0], [10, 0], [10, 5]])])
    np.testing.assert_allclose(poly, [[100, 0], [90, 0], [90, 5]])
    assert np.array_equal(T.VFlipTransform(50).apply_coords(np.array([[3.0, 10]])), [[3, 40]])
    np.testing.assert_array_equal(T.VFlipTransform(20).apply_image(img), img[::-1])


def test_hflip_keypoints_use_flip_map():
    idx = create_keypoint_hflip_indices(["k0", "k1", "k2", "k3"], [("k0", "k2")])
    assert idx.tolist() == [2, 1, 0, 3]
    anno = {
        "bbox": [10, 0, 20, 10],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "keypoints": [10, 5, 2, 20, 5, 2, 30, 5, 1, 0, 0, 0],
        "segmentation": [[10, 0, 30, 0, 30, 10]],
    }
    out = transform_instance_annotations(
        anno, T.TransformList([T.HFlipTransform(100)]), (50, 100), keypoint_hflip_indices=idx
    )
    np.testing.assert_allclose(out["bbox"], [70, 0, 90, 10])
    assert out["bbox_mode"] == BoxMode.XYXY_ABS
    # old k2 (30, 5, v=1) flips to x=70 and becomes k0; k1 stays; the unlabeled k3 stays all-zero
    np.testing.assert_allclose(out["keypoints"], [[70, 5, 1], [80, 5, 2], [90, 5, 2], [0, 0, 0]])
    np.testing.assert_allclose(out["segmentation"][0], [90, 0, 70, 0, 70, 10])
    assert anno["keypoints"][0] == 10  # the input is not modified
    # two flips cancel: no reordering
    out2 = transform_instance_annotations(
        anno, [T.HFlipTransform(100), T.HFlipTransform(100)], (50, 100), keypoint_hflip_indices=idx
    )
    np.testing.assert_allclose(out2["keypoints"], [[10, 5, 2], [20, 5, 2], [30, 5, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="keypoint_hflip_indices"):
        transform_instance_annotations(anno, [T.HFlipTransform(100)], (50, 100))
    with pytest.raises(ValueError, match="not in keypoint_names"):
        create_keypoint_hflip_indices(["a"], [("a", "b")])


def test_keypoints_leaving_image_become_unlabeled():
    anno = {
        "bbox": [0, 0, 10, 10],
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "keypoints": [5, 5, 2, 25, 5, 2],
    }
    out = transform_instance_annotations(anno, [T.CropTransform(10, 0, 10, 10)], (10, 10))
    np.testing.assert_allclose(out["keypoints"], [[0, 0, 0], [0, 0, 0]])  # x = -5 and 15: outside
    np.testing.assert_allclose(out["bbox"], [0, 0, 0, 10])  # clipped


def test_resize_shortest_edge_shapes():
    f = T.ResizeShortestEdge.get_output_shape
    assert f(256, 320, 800, 1333) == (800, 1000)
    assert f(480, 640, 800, 1000) == (750, 1000)  # capped by max_size: 800 x 1066.7 -> 750 x 1000
    assert f(481, 640, 800, 1333) == (800, 1064)  # 640 * 800 / 481 = 1064.45
    assert f(640, 480, 800, 1333) == (1067, 800)  # 640 * 800 / 480 = 1066.67 rounds up
    aug = T.ResizeShortestEdge((600,), sample_style="choice")
    img = _img(256, 320)
    t = aug.get_transform(img)
    assert isinstance(t, T.ResizeTransform) and (t.new_h, t.new_w) == (600, 750)
    s = 600 / 256
    np.testing.assert_allclose(
        t.apply_box(np.array([[10.0, 20, 30, 40]])), [[10 * s, 20 * s, 30 * s, 40 * s]]
    )
    out = t.apply_image(img)
    assert out.shape == (600, 750, 3) and out.dtype == np.uint8
    # bilinear with half-pixel centres, as F.interpolate(align_corners=False) in float64 (upsampling)
    ref = F.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].double(),
        size=(600, 750),
        mode="bilinear",
        align_corners=False,
    )[0].permute(1, 2, 0)
    diff = (torch.from_numpy(out).double() - ref).abs()
    assert diff.max() <= 1.0 + 1e-6 and diff.mean() < 0.4  # uint8 rounding of PIL's fixed point
    aug = T.ResizeShortestEdge((100, 200), max_size=1000)
    for _ in range(10):
        t = aug.get_transform(img)
        assert 100 <= min(t.new_h, t.new_w) <= 200
    seg = np.zeros((256, 320), np.uint8)
    seg[:128] = 3
    rs = t.apply_segmentation(seg)
    assert rs.shape == (t.new_h, t.new_w) and set(np.unique(rs)) == {0, 3}  # nearest: no new labels
    with pytest.raises(ValueError, match="sample_style"):
        T.ResizeShortestEdge(100, sample_style="bad")
    with pytest.raises(ValueError, match="image must have shape"):
        T.ResizeTransform(10, 10, 20, 20).apply_image(img)


def test_random_flip():
    img = _img()
    assert isinstance(T.RandomFlip(prob=1.0).get_transform(img), T.HFlipTransform)
    assert isinstance(T.RandomFlip(prob=0.0).get_transform(img), T.NoOpTransform)
    t = T.RandomFlip(prob=1.0, horizontal=False, vertical=True).get_transform(img)
    assert isinstance(t, T.VFlipTransform) and t.height == 20
    flips = sum(isinstance(T.RandomFlip(0.5).get_transform(img), T.HFlipTransform) for _ in range(400))
    assert 150 < flips < 250
    with pytest.raises(ValueError, match="exactly one"):
        T.RandomFlip(horizontal=True, vertical=True)
    with pytest.raises(ValueError, match="prob"):
        T.RandomFlip(prob=1.5)


def test_random_crop_sizes_and_offsets():
    img = _img(100, 200)
    assert T.RandomCrop("relative", (0.5, 0.25)).get_crop_size((100, 200)) == (50, 50)
    assert T.RandomCrop("absolute", (30, 40)).get_crop_size((100, 200)) == (30, 40)
    assert T.RandomCrop("absolute", (300, 40)).get_crop_size((100, 200)) == (100, 40)
    for _ in range(20):
        ch, cw = T.RandomCrop("relative_range", (0.5, 0.6)).get_crop_size((100, 200))
        assert 50 <= ch <= 100 and 120 <= cw <= 200
        ch, cw = T.RandomCrop("absolute_range", (30, 60)).get_crop_size((100, 200))
        assert 30 <= ch <= 60 and 30 <= cw <= 60
        t = T.RandomCrop("absolute", (30, 40)).get_transform(img)
        assert 0 <= t.x0 <= 160 and 0 <= t.y0 <= 70 and (t.w, t.h) == (40, 30)
        np.testing.assert_array_equal(t.apply_image(img), img[t.y0 : t.y0 + 30, t.x0 : t.x0 + 40])
    t = T.CropTransform(10, 20, 50, 40)
    np.testing.assert_allclose(t.apply_box(np.array([[15.0, 25, 80, 70]])), [[5, 5, 70, 50]])
    np.testing.assert_allclose(t.apply_coords(np.array([[10.0, 20]])), [[0, 0]])
    # polygons are clipped to the window: the square [0, 100]^2 becomes the window itself
    (poly,) = t.apply_polygons([np.array([[0.0, 0], [100, 0], [100, 100], [0, 100]])])
    xs, ys = poly[:, 0], poly[:, 1]
    assert 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) == pytest.approx(2000)
    assert poly.min(0).tolist() == [0, 0] and poly.max(0).tolist() == [50, 40]
    # a triangle sticking out on the right: the part inside, x <= 50
    (poly,) = t.apply_polygons([np.array([[40.0, 20], [80, 20], [40, 60]])])  # local: (30,0),(70,0),(30,40)
    xs, ys = poly[:, 0], poly[:, 1]
    # inside x <= 50 of the right triangle with legs 40: 40*40/2 - 20*20/2 = 600
    assert 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) == pytest.approx(600)
    assert t.apply_polygons([np.array([[200.0, 200], [210, 200], [210, 210]])]) == []
    with pytest.raises(ValueError, match="crop_type"):
        T.RandomCrop("bad", (1, 1))
    with pytest.raises(ValueError, match="relative crop_size"):
        T.RandomCrop("relative", (0.0, 1.0))


def test_random_crop_category_area_and_instances():
    img = _img(40, 40)
    sem = np.zeros((40, 40), np.uint8)
    sem[:, 20:] = 1
    aug = T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), single_category_max_area=0.9)
    for _ in range(30):
        inp = T.AugInput(img, sem_seg=sem)
        t = aug(inp)
        assert len(np.unique(inp.sem_seg)) == 2, (t.x0, t.y0)
    boxes = np.array([[20.0, 10, 30, 30]])  # centre (25, 20): a 20x20 crop holds it iff x0 >= 6, y0 >= 1

    def hits(aug):
        n = 0
        for _ in range(30):
            t = aug(T.AugInput(img, boxes=boxes))
            n += t.x0 >= 6 and t.y0 >= 1
        return n

    # a single try succeeds with p = 15/21 * 20/21 = 0.68; 10 tries all fail with p ~ 1e-5
    assert hits(T.RandomCrop_CategoryAreaConstraint("absolute", (20, 20), min_instances=1)) == 30
    assert hits(T.RandomCrop("absolute", (20, 20))) < 30


def test_photometric():
    img = np.array([[[100, 200, 50]]], np.uint8)
    t = T.RandomBrightness(2.0, 2.0).get_transform(img)
    np.testing.assert_array_equal(t.apply_image(img), [[[200, 255, 100]]])
    coords = np.array([[1.0, 2.0]])
    assert t.apply_coords(coords) is coords
    img2 = np.array([[[0, 0, 0], [90, 120, 30]]], np.uint8)
    t = T.RandomContrast(0.0, 0.0).get_transform(img2)
    np.testing.assert_array_equal(t.apply_image(img2), np.full((1, 2, 3), 40, np.uint8))  # the mean
    t = T.RandomContrast(2.0, 2.0).get_transform(img2)  # 2 * x - mean, clipped
    np.testing.assert_array_equal(t.apply_image(img2), [[[0, 0, 0], [140, 200, 20]]])
    bgr = np.array([[[10, 20, 30]]], np.uint8)  # B=10, G=20, R=30
    gray = 0.299 * 30 + 0.587 * 20 + 0.114 * 10  # 21.85
    out = T.RandomSaturation(0.0, 0.0).get_transform(bgr).apply_image(bgr)
    np.testing.assert_array_equal(out, np.full((1, 1, 3), round(gray), np.uint8))
    out = T.RandomSaturation(0.5, 0.5, image_format="RGB").get_transform(bgr).apply_image(bgr)
    gray_rgb = 0.299 * 10 + 0.587 * 20 + 0.114 * 30  # 18.15
    np.testing.assert_array_equal(out, np.rint(0.5 * gray_rgb + 0.5 * bgr).astype(np.uint8))
    with pytest.raises(ValueError, match="RandomBrightness"):
        T.RandomBrightness(2.0, 1.0)


def test_rotation():
    img = _img(20, 40)
    t = T.RandomRotation((90, 90), interp="nearest").get_transform(img)
    assert (t.bound_h, t.bound_w) == (40, 20)
    # counter-clockwise: the right middle (40, 10) goes to the top middle (10, 0)
    np.testing.assert_allclose(t.apply_coords(np.array([[40.0, 10], [0, 0]])), [[10, 0], [0, 40]], atol=1e-9)
    np.testing.assert_array_equal(t.apply_image(img), np.rot90(img))  # pixel centres map onto pixel centres
    bilinear = T.RotationTransform(20, 40, 90).apply_image(img)
    assert np.abs(bilinear.astype(int) - np.rot90(img)).max() <= 1  # PIL's fixed-point rounding
    np.testing.assert_allclose(t.apply_box(np.array([[0.0, 0, 10, 5]])), [[0, 30, 5, 40]], atol=1e-9)
    # 45 degrees about the centre without expand: a point on the centre stays, size unchanged
    t = T.RotationTransform(20, 40, 45, expand=False)
    np.testing.assert_allclose(t.apply_coords(np.array([[20.0, 10]])), [[20, 10]], atol=1e-9)
    x, y = t.apply_coords(np.array([[30.0, 10]]))[0]
    np.testing.assert_allclose([x, y], [20 + 10 / np.sqrt(2), 10 - 10 / np.sqrt(2)], atol=1e-9)
    assert t.apply_image(img).shape == (20, 40, 3)
    assert isinstance(
        T.RandomRotation([0.0, 360.0], sample_style="choice").get_transform(img), T.NoOpTransform
    )


def test_augmentation_list_and_aug_input():
    img = _img(20, 40)
    boxes = np.array([[0.0, 0, 10, 10]])
    inp = T.AugInput(img, boxes=boxes)
    tfms = T.AugmentationList([T.RandomFlip(prob=1.0), T.ResizeShortestEdge((40,), sample_style="choice")])(
        inp
    )
    assert isinstance(tfms, T.TransformList) and len(tfms) == 2
    assert inp.image.shape == (40, 80, 3)
    np.testing.assert_allclose(inp.boxes, [[60, 0, 80, 20]])
    np.testing.assert_allclose(tfms.apply_box(boxes), inp.boxes)
    out, tfms2 = T.apply_augmentations([T.HFlipTransform(40)], img)
    np.testing.assert_array_equal(out, img[:, ::-1])
    assert isinstance(tfms2.transforms[0], T.HFlipTransform)
    with pytest.raises(ValueError, match="AugInput: image"):
        T.AugInput(np.zeros(5))
    with pytest.raises(TypeError, match="Transform"):
        T.TransformList([1])


def test_plugin_registration():
    from detcore.plugins import get_component

    assert get_component("augmentation", "ResizeShortestEdge") is T.ResizeShortestEdge
    assert (
        get_component("augmentation", "RandomCrop_CategoryAreaConstraint")
        is T.RandomCrop_CategoryAreaConstraint
    )
