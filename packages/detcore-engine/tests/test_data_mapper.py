from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.engine.data import (
    DatasetMapper,
    create_keypoint_hflip_indices,
    load_coco_json,
    make_shapes_dataset,
)
from detcore.engine.data import transforms as T
from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks


@pytest.fixture(scope="module")
def shapes_small(tmp_path_factory):
    """A tiny shapes dataset (8 train, 2 val images, seed 0): ``{split: (json_file, image_root)}``."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=2, seed=0)


FLIP = create_keypoint_hflip_indices(["k0", "k1", "k2", "k3"], [("k0", "k2")])


@pytest.fixture(scope="module")
def dicts(shapes_small):
    return load_coco_json(*shapes_small["train"])


def _xyxy(anns):
    return np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)


def test_output_types_and_values(dicts):
    d = dicts[0]
    before = copy.deepcopy(d)
    out = DatasetMapper(True, use_instance_mask=True, use_keypoint=True, keypoint_hflip_indices=FLIP)(d)
    assert d == before  # the input dict is not changed
    img = out["image"]
    assert isinstance(img, torch.Tensor) and img.dtype == torch.uint8 and img.shape == (3, 256, 320)
    with Image.open(d["file_name"]) as im:
        rgb = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), rgb[:, :, ::-1])  # BGR
    assert (out["height"], out["width"], out["image_id"]) == (256, 320, d["image_id"])
    assert "annotations" not in out
    inst = out["instances"]
    n = len(d["annotations"])
    assert isinstance(inst, Instances) and len(inst) == n and inst.image_size == (256, 320)
    assert isinstance(inst.gt_boxes, Boxes)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), _xyxy(d["annotations"]), atol=1e-4)
    assert inst.gt_classes.dtype == torch.int64
    assert inst.gt_classes.tolist() == [a["category_id"] for a in d["annotations"]]
    assert isinstance(inst.gt_masks, PolygonMasks) and len(inst.gt_masks) == n
    assert isinstance(inst.gt_keypoints, Keypoints) and inst.gt_keypoints.tensor.shape == (n, 4, 3)
    expected = np.array([a["keypoints"] for a in d["annotations"]], dtype=np.float32).reshape(n, 4, 3)
    expected[expected[:, :, 2] == 0] = 0  # unlabeled keypoints are all-zero
    np.testing.assert_allclose(inst.gt_keypoints.tensor.numpy(), expected, atol=1e-4)
    rgb_out = DatasetMapper(True, image_format="RGB")(d)
    np.testing.assert_array_equal(rgb_out["image"].permute(1, 2, 0).numpy(), rgb)
    assert not rgb_out["instances"].has("gt_masks") and not rgb_out["instances"].has("gt_keypoints")


def test_bitmask_format(dicts):
    d = dicts[1]
    inst = DatasetMapper(True, use_instance_mask=True, instance_mask_format="bitmask")(d)["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (
        len(d["annotations"]),
        256,
        320,
    )
    for m, a in zip(inst.gt_masks.tensor, d["annotations"]):
        w, h = a["bbox"][2:]
        perimeter = 2 * (w + h)
        assert abs(float(m.sum()) - a_area(a)) <= perimeter  # rasterisation differs only along the edge


def a_area(a):
    p = np.asarray(a["segmentation"][0], dtype=np.float64).reshape(-1, 2)
    return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))


def test_flip_and_resize(dicts):
    d = dicts[2]
    n = len(d["annotations"])
    mapper = DatasetMapper(
        True,
        augmentations=[T.RandomFlip(prob=1.0), T.ResizeShortestEdge((512,), sample_style="choice")],
        use_instance_mask=True,
        use_keypoint=True,
        keypoint_hflip_indices=FLIP,
    )
    out = mapper(d)
    assert out["image"].shape == (3, 512, 640)
    assert (out["height"], out["width"]) == (256, 320)  # the original size, for rescaling predictions
    inst = out["instances"]
    ref = _xyxy(d["annotations"])
    flipped = np.stack([320 - ref[:, 2], ref[:, 1], 320 - ref[:, 0], ref[:, 3]], axis=1) * 2
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), flipped, atol=1e-3)
    kp = inst.gt_keypoints.tensor.numpy()
    src = np.array([a["keypoints"] for a in d["annotations"]], dtype=np.float64).reshape(n, 4, 3)
    for i, a in enumerate(d["annotations"]):
        # k0 and k2 swap: new k0 is old k2 mirrored (x -> 320 - x), scaled by 2
        if src[i, 2, 2] > 0:
            np.testing.assert_allclose(kp[i, 0, :2], [(320 - src[i, 2, 0]) * 2, src[i, 2, 1] * 2], atol=1e-3)
            assert kp[i, 0, 2] == src[i, 2, 2]
        if a["category_id"] == 0:  # circles: the left point stays the left point
            assert kp[i, 0, 0] < kp[i, 2, 0]
    image = mapper(d)["image"]
    with Image.open(d["file_name"]) as im:
        ref_img = np.asarray(im.convert("RGB").resize((640, 512), Image.BILINEAR))[:, ::-1, ::-1]
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), ref_img)


def test_crop_filters_and_recomputes(dicts):
    d = copy.deepcopy(dicts[0])
    # one instance fully inside the crop, one fully outside
    d["annotations"] = [
        {**d["annotations"][0], "bbox": [10, 10, 20, 20], "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
        {
            **d["annotations"][0],
            "bbox": [200, 200, 20, 20],
            "segmentation": [[200, 200, 220, 200, 220, 220, 200, 220]],
        },
        {
            **d["annotations"][0],
            "bbox": [90, 10, 20, 20],
            "segmentation": [[90, 10, 110, 10, 110, 30, 90, 30]],
        },
    ]
    for a in d["annotations"]:
        a.pop("keypoints")
    mapper = DatasetMapper(
        True, augmentations=[T.CropTransform(0, 0, 100, 50)], use_instance_mask=True, recompute_boxes=True
    )
    inst = mapper(d)["instances"]
    assert len(inst) == 2  # the second one left the image
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[10, 10, 30, 30], [90, 10, 100, 30]])
    with pytest.raises(ValueError, match="recompute_boxes"):
        DatasetMapper(True, recompute_boxes=True)


def test_crowd_dropped_and_inference(dicts):
    d = copy.deepcopy(dicts[0])
    d["annotations"][0]["iscrowd"] = 1
    out = DatasetMapper(True)(d)
    assert len(out["instances"]) == len(d["annotations"]) - 1
    inf = DatasetMapper(False, augmentations=[T.ResizeShortestEdge((128,), sample_style="choice")])(d)
    assert "instances" not in inf and "annotations" not in inf
    assert inf["image"].shape == (3, 128, 160)


def test_errors(dicts, tmp_path):
    d = dict(dicts[0], height=100)
    with pytest.raises(ValueError, match=r"000001\.png.*320x256.*says 320x100"):
        DatasetMapper(True)(d)
    with pytest.raises(ValueError, match="does not exist"):
        DatasetMapper(True)(dict(dicts[0], file_name=str(tmp_path / "nope.png")))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        DatasetMapper(True)(dict(dicts[0], file_name=str(tmp_path / "bad.png")))
    with pytest.raises(ValueError, match="image_format"):
        DatasetMapper(True, image_format="YUV")
    with pytest.raises(ValueError, match="instance_mask_format"):
        DatasetMapper(True, instance_mask_format="rle")


def test_from_config(dicts):
    from detcore.archs import get_config

    cfg = get_config(
        "mask_rcnn_R_50_FPN",
        [
            "input.min_size_train=[192]",
            "input.max_size_train=1000",
            "input.random_flip=none",
            "input.min_size_test=128",
        ],
    )
    kwargs = DatasetMapper.from_config(cfg, is_train=True)
    assert kwargs["use_instance_mask"] is True and kwargs["use_keypoint"] is False
    out = DatasetMapper(**kwargs)(dicts[0])
    # 320x256 -> short edge 192: 240x192, no flip so the boxes are the annotations scaled by 0.75
    assert tuple(out["image"].shape) == (3, 192, 240)
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor.numpy(), _xyxy(dicts[0]["annotations"]) * 0.75, rtol=1e-5
    )
    test = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=False))(dicts[0])
    assert tuple(test["image"].shape) == (3, 128, 160) and "instances" not in test
    kp = get_config("keypoint_rcnn_R_50_FPN")
    assert DatasetMapper.from_config(kp, is_train=True)["use_keypoint"] is True
    with pytest.raises(ValueError, match="random_flip"):
        DatasetMapper.from_config(get_config("mask_rcnn_R_50_FPN", ["input.random_flip=diagonal"]))
