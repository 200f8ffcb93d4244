from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from detcore.engine.data import (
    DatasetCatalog,
    Metadata,
    MetadataCatalog,
    get_detection_dataset_dicts,
    load_coco_json,
    load_coco_panoptic_json,
    register_coco_instances,
)
from detcore.engine.data.detection_utils import rle_to_mask
from detcore.structures import BoxMode

CATEGORIES = [
    {"id": 5, "name": "five", "keypoints": ["a", "b"]},
    {"id": 10, "name": "ten"},
    {"id": 7, "name": "seven"},
]


def _coco(tmp_path, annotations, images=None, name="ann.json"):
    images = images or [
        {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
    ]
    for img in images:
        Image.fromarray(np.zeros((img["height"], img["width"], 3), np.uint8)).save(
            tmp_path / img["file_name"]
        )
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def _ann(id, image_id=1, category_id=5, bbox=(1, 2, 3, 4), **kw):
    return {
        "id": id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(bbox),
        "area": 12,
        "iscrowd": 0,
        **kw,
    }


def test_instances_and_keypoints(tmp_path):
    path = _coco(
        tmp_path,
        [
            _ann(1, segmentation=[[1, 2, 4, 2, 4, 6]], keypoints=[2, 3, 2, 0, 0, 0], num_keypoints=1),
            _ann(2, category_id=7, iscrowd=1, segmentation={"size": [20, 30], "counts": [10, 5, 585]}),
            _ann(3, image_id=2, category_id=10),
        ],
    )
    dicts = load_coco_json(path, tmp_path, "coco_test_a")
    try:
        assert [d["image_id"] for d in dicts] == [1, 2]
        d = dicts[0]
        assert d["file_name"] == str(tmp_path / "a.png") and (d["height"], d["width"]) == (20, 30)
        a, crowd = d["annotations"]
        assert a["bbox"] == [1, 2, 3, 4] and a["bbox_mode"] == BoxMode.XYWH_ABS
        assert a["category_id"] == 0  # ids 5, 7, 10 -> 0, 1, 2
        assert a["segmentation"] == [[1, 2, 4, 2, 4, 6]]
        assert a["keypoints"] == [2.5, 3.5, 2, 0.5, 0.5, 0]  # +0.5 on x, y
        assert crowd["iscrowd"] == 1 and crowd["category_id"] == 1
        assert isinstance(crowd["segmentation"]["counts"], (bytes, str))  # compressed RLE
        assert rle_to_mask(crowd["segmentation"]).sum() == 5
        assert dicts[1]["annotations"][0]["category_id"] == 2
        meta = MetadataCatalog.get("coco_test_a")
        assert meta.thing_classes == ["five", "seven", "ten"]
        assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 7: 1, 10: 2}
        assert meta.keypoint_names == ["a", "b"]
    finally:
        MetadataCatalog.remove("coco_test_a")


def test_invalid_polygons_dropped_with_warning(tmp_path):
    path = _coco(
        tmp_path,
        [
            _ann(1, segmentation=[[1, 2, 4, 2, 4, 6], [1, 1, 2, 2]]),  # one good, one with 4 coords
            _ann(2, segmentation=[[1, 2, 3, 4]]),  # no valid polygon: instance dropped
        ],
    )
    with pytest.warns(UserWarning) as record:
        dicts = load_coco_json(path, tmp_path)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "image id 1, annotation id 1: dropped 1 invalid polygon" in messages[0]
    assert "image id 1, annotation id 2: dropped 1 invalid polygon" in messages[1]
    (a,) = dicts[0]["annotations"]
    assert a["segmentation"] == [[1, 2, 4, 2, 4, 6]]


def test_corrupt_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON"):
        load_coco_json(path, tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_coco_json(tmp_path / "missing.json", tmp_path)
    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match="missing list 'annotations'"):
        load_coco_json(path, tmp_path)


def test_missing_image(tmp_path):
    path = _coco(tmp_path, [_ann(1)])
    (tmp_path / "b.png").unlink()
    assert len(load_coco_json(path, tmp_path)) == 2  # not checked by default
    with pytest.raises(ValueError, match=r"ann\.json: image id 2: image file .*b\.png.* does not exist"):
        load_coco_json(path, tmp_path, check_files=True)
    with pytest.warns(UserWarning, match="image id 2"):
        dicts = load_coco_json(path, tmp_path, check_files=True, skip_invalid=True)
    assert [d["image_id"] for d in dicts] == [1]


@pytest.mark.parametrize(
    "bbox", [(1, 2, -3, 4), (1, 2, 3, -0.5), (1, math.nan, 3, 4), (math.inf, 2, 3, 4), (1, 2, 3)]
)
def test_bad_boxes(tmp_path, bbox):
    path = _coco(tmp_path, [_ann(1), _ann(7, image_id=2, bbox=bbox)])
    with pytest.raises(ValueError, match=r"ann\.json: image id 2, annotation id 7: bbox must be 4 finite"):
        load_coco_json(path, tmp_path)
    with pytest.warns(UserWarning, match="annotation id 7"):
        dicts = load_coco_json(path, tmp_path, skip_invalid=True)
    assert [len(d["annotations"]) for d in dicts] == [1, 0]


def test_unknown_category(tmp_path):
    path = _coco(tmp_path, [_ann(4, category_id=99)])
    with pytest.raises(ValueError, match=r"image id 1, annotation id 4: unknown category_id 99"):
        load_coco_json(path, tmp_path)
    with pytest.warns(UserWarning, match="unknown category_id 99"):
        assert load_coco_json(path, tmp_path, skip_invalid=True)[0]["annotations"] == []


def test_register_coco_instances_and_catalog(tmp_path):
    path = _coco(tmp_path, [_ann(1), _ann(2, image_id=1, iscrowd=1)])
    register_coco_instances("coco_test_b", {"evaluator_type": "coco"}, path, tmp_path)
    try:
        assert "coco_test_b" in DatasetCatalog.list()
        dicts = DatasetCatalog.get("coco_test_b")
        assert len(dicts) == 2
        meta = MetadataCatalog.get("coco_test_b")
        assert meta.json_file == str(path) and meta.image_root == str(tmp_path)
        assert meta.thing_classes == ["five", "seven", "ten"]
        with pytest.raises(ValueError, match="already registered"):
            register_coco_instances("coco_test_b", {}, path, tmp_path)
        # image 2 has no annotation, image 1 only a non-crowd one counts
        assert [d["image_id"] for d in get_detection_dataset_dicts("coco_test_b")] == [1]
        assert len(get_detection_dataset_dicts(["coco_test_b"], filter_empty=False)) == 2
        with pytest.raises(ValueError, match="no images left"):
            get_detection_dataset_dicts("coco_test_b", min_keypoints=1)
    finally:
        DatasetCatalog.remove("coco_test_b")
        MetadataCatalog.remove("coco_test_b")
    with pytest.raises(KeyError, match="not registered"):
        DatasetCatalog.get("coco_test_b")
    with pytest.raises(TypeError, match="callable"):
        DatasetCatalog.register("x", 3)


def test_metadata_conflicts():
    m = Metadata(name="m", thing_classes=["a"])
    m.thing_classes = ["a"]  # same value: fine
    with pytest.raises(ValueError, match="thing_classes"):
        m.thing_classes = ["b"]
    with pytest.raises(AttributeError, match="no attribute 'stuff_classes'"):
        _ = m.stuff_classes
    assert m.get("stuff_classes", 1) == 1


def test_panoptic(tmp_path):
    data = {
        "images": [{"id": 3, "file_name": "x.jpg", "height": 4, "width": 5}],
        "annotations": [
            {
                "image_id": 3,
                "file_name": "x.png",
                "segments_info": [
                    {"id": 11, "category_id": 1, "iscrowd": 0, "area": 3, "bbox": [0, 0, 1, 3]},
                    {"id": 12, "category_id": 200, "iscrowd": 0, "area": 17, "bbox": [0, 0, 5, 4]},
                ],
            }
        ],
        "categories": [],
    }
    path = tmp_path / "pan.json"
    path.write_text(json.dumps(data))
    meta = {"thing_dataset_id_to_contiguous_id": {1: 0}, "stuff_dataset_id_to_contiguous_id": {200: 4}}
    (d,) = load_coco_panoptic_json(path, tmp_path / "img", tmp_path / "pan", meta)
    assert d["file_name"] == str(tmp_path / "img" / "x.jpg") and d["pan_seg_file_name"] == str(
        tmp_path / "pan" / "x.png"
    )
    assert (d["image_id"], d["height"], d["width"]) == (3, 4, 5)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
        (11, 0, True),
        (12, 4, False),
    ]
    data["annotations"][0]["segments_info"][1]["category_id"] = 201
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"pan\.json: image id 3, segment id 12: unknown category_id 201"):
        load_coco_panoptic_json(path, tmp_path, tmp_path, meta)
