from __future__ import annotations

import contextlib
import functools
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detcore.engine.data import DatasetCatalog, MetadataCatalog, make_shapes_dataset, shapes
from detcore.engine.data.shapes import shapes_metadata


@pytest.fixture(scope="module")
def shapes_small(tmp_path_factory):
    """A tiny shapes dataset (8 train, 2 val images, seed 0): ``{split: (json_file, image_root)}``."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=2, seed=0)


def _coco(json_file):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(json_file))


def _poly(ann):
    return np.asarray(ann["segmentation"][0], dtype=np.float64).reshape(-1, 2)


def _inside_ref(pt, poly):
    """Ray casting (float64), strict enough for points not on the boundary."""
    x, y = pt
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xc:
                inside = not inside
    return inside


def test_files_and_json(shapes_small):
    for split, n in (("train", 8), ("val", 2)):
        json_file, image_root = shapes_small[split]
        coco = _coco(json_file)
        assert sorted(coco.getImgIds()) == list(range(1, n + 1))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle"]
        assert coco.getCatIds() == [1, 2, 3]
        for img in coco.loadImgs(coco.getImgIds()):
            path = image_root / img["file_name"]
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (320, 256)
                assert np.asarray(im).std() > 5  # noisy background, not blank
            assert (img["width"], img["height"]) == (320, 256)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 4


def test_boxes_areas_and_polygons(shapes_small):
    coco = _coco(shapes_small["train"][0])
    cats = set()
    for ann in coco.loadAnns(coco.getAnnIds()):
        cats.add(ann["category_id"])
        poly = _poly(ann)
        assert len(poly) == {1: 32, 2: 4, 3: 3}[ann["category_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 320 and y + h <= 256
        np.testing.assert_allclose([x, y, x + w, y + h], [*poly.min(0), *poly.max(0)], atol=2e-3)
        xs, ys = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(
            sum(xs[i] * ys[(i + 1) % len(xs)] - xs[(i + 1) % len(xs)] * ys[i] for i in range(len(xs)))
        )
        assert ann["area"] == pytest.approx(area, rel=1e-3)
        # circumradius 14..56: the centroid-to-vertex distance
        r = np.linalg.norm(poly - poly.mean(0), axis=1).max()
        assert 14 - 0.01 <= r <= 56 + 0.01
        assert ann["iscrowd"] == 0
    assert cats <= {1, 2, 3}


def test_keypoint_rules(shapes_small):
    coco = _coco(shapes_small["train"][0])
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        anns.sort(key=lambda a: a["id"])  # drawing order
        for i, ann in enumerate(anns):
            kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(4, 3)
            xy = kps[:, :2] + 0.5  # stored in the COCO pixel-index convention
            poly = _poly(ann)
            if ann["category_id"] == 3:
                assert kps[3].tolist() == [0, 0, 0]
                np.testing.assert_allclose(xy[:3], poly, atol=2e-3)
            elif ann["category_id"] == 2:
                np.testing.assert_allclose(xy, poly, atol=2e-3)
            else:  # circle: left, top, right, bottom extreme points
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                np.testing.assert_allclose(xy, [[x0, cy], [cx, y0], [x1, cy], [cx, y1]], atol=2e-3)
            labeled = kps[:, 2] > 0
            assert ann["num_keypoints"] == labeled.sum()
            for k in np.nonzero(labeled)[0]:
                occluded = any(_inside_ref(xy[k], _poly(later)) for later in anns[i + 1 :])
                assert kps[k, 2] == (1 if occluded else 2)


def test_no_instance_mostly_occluded(shapes_small):
    coco = _coco(shapes_small["train"][0])
    for img_id in coco.getImgIds():
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=img_id)), key=lambda a: a["id"])
        masks = []
        for ann in anns:
            im = Image.new("L", (320, 256), 0)
            ImageDraw.Draw(im).polygon([(x - 0.5, y - 0.5) for x, y in _poly(ann)], fill=1)
            masks.append(np.asarray(im, dtype=bool))
        for i, m in enumerate(masks):
            visible = m.copy()
            for later in masks[i + 1 :]:
                visible &= ~later
            assert visible.sum() >= 0.3 * m.sum() - 1


def test_deterministic_and_idempotent(tmp_path, shapes_small):
    a = make_shapes_dataset(tmp_path / "a", num_train=3, num_val=1, seed=0)
    b = make_shapes_dataset(tmp_path / "b", num_train=3, num_val=1, seed=0)
    assert a["train"][0].read_bytes() == b["train"][0].read_bytes()
    assert (a["train"][1] / "000002.png").read_bytes() == (b["train"][1] / "000002.png").read_bytes()
    # the same seed gives the same first images whatever the split size
    small = json.loads(a["train"][0].read_text())
    big = json.loads(shapes_small["train"][0].read_text())
    assert small["annotations"] == [x for x in big["annotations"] if x["image_id"] <= 3]
    c = make_shapes_dataset(tmp_path / "c", num_train=3, num_val=1, seed=1)
    assert c["train"][0].read_bytes() != a["train"][0].read_bytes()
    # reuse: nothing rewritten
    stamp = a["train"][0].stat().st_mtime_ns
    png = a["train"][1] / "000001.png"
    png_stamp = png.stat().st_mtime_ns
    make_shapes_dataset(tmp_path / "a", num_train=3, num_val=1, seed=0)
    assert a["train"][0].stat().st_mtime_ns == stamp and png.stat().st_mtime_ns == png_stamp
    # a missing file or other arguments regenerate
    png.unlink()
    make_shapes_dataset(tmp_path / "a", num_train=3, num_val=1, seed=0)
    assert png.read_bytes() == (b["train"][1] / "000001.png").read_bytes()
    make_shapes_dataset(tmp_path / "a", num_train=2, num_val=1, seed=0)
    assert len(json.loads(a["train"][0].read_text())["images"]) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        make_shapes_dataset(tmp_path, num_train=1, num_val=0, image_size=(64, 64))
    with pytest.raises(ValueError, match="num_train"):
        make_shapes_dataset(tmp_path, num_train=-1)


def test_plugin_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("DETCORE_DATA", str(tmp_path))
    for name in ("shapes_train", "shapes_val"):
        DatasetCatalog.remove(name) if name in DatasetCatalog._loaders else None
        MetadataCatalog.remove(name)
    try:
        assert {"shapes_train", "shapes_val"} <= set(DatasetCatalog.list())
        meta = MetadataCatalog.get("shapes_val")
        assert meta.thing_classes == ["circle", "square", "triangle"]
        assert meta.keypoint_flip_map == [("k0", "k2")]
        assert meta.json_file == str(tmp_path / "shapes" / "annotations" / "instances_val.json")
        assert meta.as_dict() == {"name": "shapes_val", **shapes_metadata("val", tmp_path / "shapes")}
        # the plugin's loader generates the dataset on first use (made small here) and loads it
        monkeypatch.setattr(
            shapes, "make_shapes_dataset", functools.partial(make_shapes_dataset, num_train=3, num_val=2)
        )
        dicts = DatasetCatalog.get("shapes_val")
        assert [d["image_id"] for d in dicts] == [1, 2]
        assert dicts[0]["file_name"] == str(tmp_path / "shapes" / "val" / "000001.png")
        assert all(0 <= a["category_id"] <= 2 for d in dicts for a in d["annotations"])
    finally:
        for name in ("shapes_train", "shapes_val"):
            if name in DatasetCatalog._loaders:
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
