"""COCOEvaluator against pycocotools' COCOeval run directly on the same predictions."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcore.engine.evaluation import (
    COCOEvaluator,
    category_mapping_by_name,
    instances_to_coco_json,
)
from detcore.structures import BitMasks, Boxes, Instances, Keypoints

# pycocotools' Cython mask.decode (used here only to rasterize ground truth) trips a numpy 2 deprecation
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# (image id, height, width)
_IMAGES = [(1, 200, 240), (2, 180, 200), (5, 160, 160)]
# (image id, category id, XYWH box, iscrowd); category 3 = person, 7 = dog
_ANNS = [
    (1, 3, [10, 20, 30, 25], 0),  # small
    (1, 3, [60, 40, 80, 125], 0),  # large
    (1, 7, [150, 100, 60, 50], 0),  # medium
    (2, 7, [20, 30, 100, 90], 0),
    (2, 3, [130, 20, 40, 70], 0),
    (2, 7, [5, 150, 12, 15], 0),
    (5, 3, [30, 30, 100, 110], 0),
    (5, 7, [0, 0, 25, 20], 1),  # crowd: ignored
]
_CATS = [{"id": 3, "name": "person"}, {"id": 7, "name": "dog"}]
_K = 17


def _octagon(box: list[float]) -> list[float]:
    x, y, w, h = box
    cx, cy = w / 4, h / 4
    pts = [
        (x + cx, y),
        (x + w - cx, y),
        (x + w, y + cy),
        (x + w, y + h - cy),
        (x + w - cx, y + h),
        (x + cx, y + h),
        (x, y + h - cy),
        (x, y + cy),
    ]
    return [float(v) for p in pts for v in p]


def _make_gt(categories: list[dict] | None = None, persons_only: bool = False) -> dict:
    rng = np.random.default_rng(0)
    sizes = {i: (h, w) for i, h, w in _IMAGES}
    anns = []
    for k, (img_id, cat, box, crowd) in enumerate(_ANNS):
        if persons_only and cat != 3:
            continue
        h, w = sizes[img_id]
        poly = _octagon(box)
        area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects([poly], h, w))))
        ann = {
            "id": k + 1,
            "image_id": img_id,
            "category_id": cat,
            "bbox": [float(v) for v in box],
            "area": area,
            "iscrowd": crowd,
            "segmentation": [poly],
        }
        if persons_only:
            x, y, bw, bh = box
            kx = rng.integers(x, x + bw, size=_K)
            ky = rng.integers(y, y + bh, size=_K)
            v = np.where(rng.random(_K) < 0.8, 2, 0)
            kx, ky = np.where(v > 0, kx, 0), np.where(v > 0, ky, 0)
            ann["keypoints"] = np.stack([kx, ky, v], axis=1).reshape(-1).astype(int).tolist()
            ann["num_keypoints"] = int((v > 0).sum())
        anns.append(ann)
    cats = categories if categories is not None else [c for c in _CATS if not persons_only or c["id"] == 3]
    return {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, h, w in _IMAGES],
        "annotations": anns,
        "categories": cats,
    }


def _write_gt(tmp_path, gt: dict) -> str:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path)


def _raw_predictions(gt: dict, perturb: bool, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """Per image: boxes XYXY, scores, dataset category ids, bool masks [N, H, W], keypoints [N, K, 3] in
    continuous coordinates (COCO pixel index + 0.5)."""
    rng = np.random.default_rng(seed)
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    out = {}
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and not a["iscrowd"]]
        boxes, scores, cats, masks, kpts = [], [], [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            box = np.array([x, y, x + bw, y + bh], dtype=np.float64)
            mask = coco.annToMask(a).astype(bool)
            kp = np.array(a.get("keypoints", [0] * (3 * _K)), dtype=np.float64).reshape(-1, 3)
            kp[:, :2] += 0.5
            kp[:, 2] = np.where(kp[:, 2] > 0, 1.0, 0.01)
            if perturb:
                box += rng.normal(0, 3, size=4)
                mask = np.roll(mask, shift=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
                kp[:, :2] += rng.normal(0, 2, size=(len(kp), 2))
            boxes.append(box)
            scores.append(rng.uniform(0.3, 1.0) if perturb else 0.9)
            cats.append(a["category_id"])
            masks.append(mask)
            kpts.append(kp)
        if perturb:  # false positives
            for _ in range(2):
                x0, y0 = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
                box = np.array([x0, y0, x0 + rng.uniform(5, 30), y0 + rng.uniform(5, 30)])
                mask = np.zeros((h, w), dtype=bool)
                mask[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
                boxes.append(box)
                scores.append(rng.uniform(0.05, 0.95))
                cats.append(int(rng.choice([c["id"] for c in gt["categories"]])))
                masks.append(mask)
                kp = np.stack([rng.uniform(x0, box[2], _K), rng.uniform(y0, box[3], _K), np.ones(_K)], axis=1)
                kpts.append(kp)
        out[img["id"]] = {
            "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
            "scores": np.array(scores, dtype=np.float64),
            "cats": np.array(cats, dtype=np.int64),
            "masks": np.array(masks, dtype=bool).reshape(-1, h, w),
            "kpts": np.array(kpts, dtype=np.float64).reshape(-1, _K, 3),
        }
    return out


def _to_batches(raw, dataset_to_contiguous: dict[int, int], fields=("masks", "kpts")):
    inputs, outputs = [], []
    for img_id, p in raw.items():
        h, w = p["masks"].shape[1:]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(p["boxes"], dtype=torch.float32))
        inst.scores = torch.tensor(p["scores"], dtype=torch.float32)
        inst.pred_classes = torch.tensor(
            [dataset_to_contiguous[c] for c in p["cats"].tolist()], dtype=torch.int64
        )
        if "masks" in fields:
            inst.pred_masks = torch.from_numpy(p["masks"])
        if "kpts" in fields:
            inst.pred_keypoints = torch.tensor(p["kpts"], dtype=torch.float32)
        inputs.append({"image_id": img_id})
        outputs.append({"instances": inst})
    return inputs, outputs


def _reference_results(raw, fields=("masks", "kpts")) -> list[dict]:
    """COCO results written directly from the raw predictions (float32 like the model's tensors)."""
    res = []
    for img_id, p in raw.items():
        boxes = p["boxes"].astype(np.float32).astype(np.float64)
        kpts = p["kpts"].astype(np.float32).astype(np.float64)
        for i in range(len(boxes)):
            x0, y0, x1, y1 = boxes[i]
            r = {
                "image_id": img_id,
                "category_id": int(p["cats"][i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(np.float32(p["scores"][i])),
            }
            if "masks" in fields:
                rle = mask_util.encode(np.asfortranarray(p["masks"][i].astype(np.uint8)))
                r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            if "kpts" in fields:
                k = kpts[i].copy()
                k[:, :2] -= 0.5
                r["keypoints"] = k.reshape(-1).tolist()
            res.append(r)
    return res


def _reference_eval(gt_path, results, iou_type, sigmas=None, cat_ids=None, names_by_cat=None, img_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        results = json.loads(json.dumps(results))
        if iou_type == "segm":
            for r in results:
                r.pop("bbox")
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if cat_ids is not None:
            ev.params.catIds = sorted(cat_ids)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    if iou_type == "keypoints":
        names = ["AP", "AP50", "AP75", "APm", "APl"]
    out = {n: (ev.stats[i] * 100 if ev.stats[i] >= 0 else math.nan) for i, n in enumerate(names)}
    if names_by_cat:
        for k, cid in enumerate(ev.params.catIds):
            if cid not in names_by_cat:
                continue
            p = ev.eval["precision"][:, :, k, 0, -1]
            p = p[p > -1]
            out[f"AP-{names_by_cat[cid]}"] = float(np.mean(p)) * 100 if p.size else math.nan
    return out


def _assert_same(actual: dict, expected: dict):
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for k, v in expected.items():
        if math.isnan(v):
            assert math.isnan(actual[k]), (k, actual[k])
        else:
            assert actual[k] == pytest.approx(v, abs=1e-9), (k, actual[k], v)


def _run(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs[:1], outputs[:1])
    evaluator.process(inputs[1:], outputs[1:])
    return evaluator.evaluate()


def test_perfect_box_and_mask_predictions_give_ap_100(tmp_path):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=False)
    inputs, outputs = _to_batches(raw, {3: 0, 7: 1}, fields=("masks",))
    res = _run(COCOEvaluator(path), inputs, outputs)
    assert list(res) == ["bbox", "segm"]
    for task in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP-person", "AP-dog"):
            assert res[task][k] == pytest.approx(100.0), (task, k)


def test_perfect_keypoints_give_ap_100_and_nan_for_missing_area(tmp_path):
    gt = _make_gt(persons_only=True)
    # keep only medium persons: no large ones -> APl is nan
    gt["annotations"] = [a for a in gt["annotations"] if 32**2 < a["area"] < 96**2]
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=False)
    inputs, outputs = _to_batches(raw, {3: 0}, fields=("kpts",))
    res = _run(COCOEvaluator(path, tasks=("keypoints",)), inputs, outputs)
    assert list(res) == ["keypoints"]
    kp = res["keypoints"]
    assert set(kp) == {"AP", "AP50", "AP75", "APm", "APl"}  # one class: no per-class AP
    for k in ("AP", "AP50", "AP75", "APm"):
        assert kp[k] == pytest.approx(100.0)
    assert math.isnan(kp["APl"])


@pytest.mark.parametrize("seed", [0, 1])
def test_perturbed_bbox_segm_match_pycocotools(tmp_path, seed):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=True, seed=seed)
    inputs, outputs = _to_batches(raw, {3: 0, 7: 1}, fields=("masks",))
    res = _run(COCOEvaluator(path, output_dir=tmp_path / "out"), inputs, outputs)
    ref = _reference_results(raw, fields=("masks",))
    names = {3: "person", 7: "dog"}
    for task in ("bbox", "segm"):
        expected = _reference_eval(path, ref, task, names_by_cat=names)
        _assert_same(res[task], expected)
        assert 0 < res[task]["AP"] < 100
    # the results file holds the same predictions in dataset category ids
    written = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    assert len(written) == len(ref)
    for w, r in zip(written, ref):
        assert w["image_id"] == r["image_id"] and w["category_id"] == r["category_id"]
        assert w["segmentation"] == r["segmentation"]
        np.testing.assert_allclose(w["bbox"], r["bbox"], rtol=0, atol=1e-9)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["coco_instances_results.json"]


def test_perturbed_keypoints_match_pycocotools(tmp_path):
    gt = _make_gt(persons_only=True)
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=True, seed=3)
    inputs, outputs = _to_batches(raw, {3: 0})
    res = _run(COCOEvaluator(path), inputs, outputs)
    assert list(res) == ["bbox", "keypoints", "segm"]
    ref = _reference_results(raw)
    for task in ("bbox", "segm", "keypoints"):
        _assert_same(res[task], _reference_eval(path, ref, task))
    assert 0 < res["keypoints"]["AP"] < 100
    # custom OKS sigmas
    sigmas = np.linspace(0.03, 0.1, _K)
    res = _run(COCOEvaluator(path, tasks=["keypoints"], kpt_oks_sigmas=sigmas), inputs, outputs)
    _assert_same(res["keypoints"], _reference_eval(path, ref, "keypoints", sigmas=sigmas))
    with pytest.raises(ValueError, match="kpt_oks_sigmas"):
        _run(COCOEvaluator(path, tasks=["keypoints"], kpt_oks_sigmas=[0.1] * 5), inputs, outputs)


def test_category_mapping_by_name():
    cats = [{"id": 3, "name": "person"}, {"id": 7, "name": " Dog"}]
    assert category_mapping_by_name(cats, ["dog", "PERSON", "cat"]) == {0: 7, 1: 3}
    with pytest.raises(ValueError, match="more than once"):
        category_mapping_by_name(cats, ["dog", "Dog"])
    with pytest.raises(ValueError, match="more than once"):
        category_mapping_by_name([*cats, {"id": 9, "name": "person"}], ["dog"])
    with pytest.raises(ValueError, match="matches"):
        category_mapping_by_name(cats, ["car"])


def test_evaluator_matches_categories_by_name(tmp_path):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=True, seed=4)
    thing_classes = ["dog", "cat", "Person"]  # model order differs from the json's; "cat" is not in the json
    inputs, outputs = _to_batches(raw, {7: 0, 3: 2}, fields=())
    # add a "cat" prediction: it has no ground-truth category and is dropped
    extra = outputs[0]["instances"]
    extra.pred_classes[0] = 1
    ev = COCOEvaluator(path, thing_classes=thing_classes, output_dir=tmp_path)
    assert ev.contiguous_id_to_dataset_id == {0: 7, 2: 3}
    res = _run(ev, inputs, outputs)
    ref = _reference_results(raw, fields=())
    del ref[0]  # the first prediction became "cat"
    expected = _reference_eval(path, ref, "bbox", names_by_cat={7: "dog", 3: "Person"})
    _assert_same(res["bbox"], expected)
    assert len(json.loads((tmp_path / "coco_instances_results.json").read_text())) == len(ref)


def test_categories_missing_from_model_are_not_averaged(tmp_path):
    cats = [*_CATS, {"id": 11, "name": "zebra"}]
    gt = _make_gt(categories=cats)
    gt["annotations"].append(
        {"id": 99, "image_id": 2, "category_id": 11, "bbox": [50, 50, 40, 40], "area": 1600.0, "iscrowd": 0,
         "segmentation": [_octagon([50, 50, 40, 40])]}
    )  # fmt: skip
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(_make_gt(), perturb=True, seed=5)
    inputs, outputs = _to_batches(raw, {3: 0, 7: 1}, fields=())
    res = _run(COCOEvaluator(path, thing_classes=["person", "dog"]), inputs, outputs)
    ref = _reference_results(raw, fields=())
    expected = _reference_eval(path, ref, "bbox", cat_ids=[3, 7], names_by_cat={3: "person", 7: "dog"})
    _assert_same(res["bbox"], expected)
    # matched by id (default: sorted ids), the zebra class counts with AP 0
    res_all = _run(COCOEvaluator(path), inputs, outputs)
    exp_all = _reference_eval(path, ref, "bbox", names_by_cat={3: "person", 7: "dog", 11: "zebra"})
    _assert_same(res_all["bbox"], exp_all)
    assert res_all["bbox"]["AP"] < res["bbox"]["AP"]


def test_explicit_id_mapping_and_coco_object(tmp_path):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=True, seed=6)
    inputs, outputs = _to_batches(raw, {3: 1, 7: 0}, fields=())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    ev = COCOEvaluator(coco, contiguous_id_to_dataset_id={0: 7, 1: 3}, tasks="bbox")
    assert ev.thing_classes == ["dog", "person"]
    res = _run(ev, inputs, outputs)
    expected = _reference_eval(
        path, _reference_results(raw, fields=()), "bbox", names_by_cat={3: "person", 7: "dog"}
    )
    _assert_same(res["bbox"], expected)
    # an in-memory dataset dict works the same
    _assert_same(
        _run(COCOEvaluator(gt, tasks=["bbox"]), *_to_batches(raw, {3: 0, 7: 1}, fields=()))["bbox"], expected
    )
    # max_dets_per_image whose last entry is not 100 uses the last entry (all 3-4 detections per image fit)
    res_md = _run(
        COCOEvaluator(gt, tasks=["bbox"], max_dets_per_image=[1, 10, 300]),
        *_to_batches(raw, {3: 0, 7: 1}, fields=()),
    )
    _assert_same(res_md["bbox"], expected)


def test_instances_to_coco_json_conversion():
    inst = Instances((4, 5))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 4.0, 3.5]]))
    inst.scores = torch.tensor([0.75])
    inst.pred_classes = torch.tensor([2])
    mask = torch.zeros(1, 4, 5, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True
    inst.pred_masks = mask
    inst.pred_keypoints = torch.tensor([[[1.5, 2.5, 0.9], [3.0, 1.0, 0.2]]])
    (r,) = instances_to_coco_json(inst, 42)
    assert r["image_id"] == 42 and r["category_id"] == 2 and r["score"] == 0.75
    assert r["bbox"] == [1.0, 2.0, 3.0, 1.5]
    assert r["keypoints"] == pytest.approx([1.0, 2.0, 0.9, 2.5, 0.5, 0.2])
    assert isinstance(r["segmentation"]["counts"], str)
    decoded = mask_util.decode(
        {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
    )
    np.testing.assert_array_equal(decoded.astype(bool), mask[0].numpy())
    json.dumps(r)
    empty = Instances((4, 5))
    assert instances_to_coco_json(empty, 1) == []
    assert instances_to_coco_json(inst[torch.zeros(1, dtype=torch.bool)], 1) == []


def test_no_predictions(tmp_path):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    ev = COCOEvaluator(path)
    ev.reset()
    assert ev.evaluate() == {}
    inst = Instances((200, 240))
    inst.pred_boxes = Boxes(torch.zeros(0, 4))
    inst.scores = torch.zeros(0)
    inst.pred_classes = torch.zeros(0, dtype=torch.int64)
    ev.process([{"image_id": 1}], [{"instances": inst}])
    res = ev.evaluate()
    assert list(res) == ["bbox"] and all(math.isnan(v) for v in res["bbox"].values())


def test_bad_arguments(tmp_path):
    gt = _make_gt()
    path = _write_gt(tmp_path, gt)
    with pytest.raises(FileNotFoundError, match="coco_gt"):
        COCOEvaluator(str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="coco_gt"):
        COCOEvaluator(3)
    with pytest.raises(ValueError, match="tasks"):
        COCOEvaluator(path, tasks=["boxes"])
    with pytest.raises(ValueError, match="contiguous_id_to_dataset_id"):
        COCOEvaluator(path, contiguous_id_to_dataset_id={0: 5})
    ev = COCOEvaluator(path)
    with pytest.raises(ValueError, match="image_id"):
        ev.process([{}], [{"instances": Instances((2, 2))}])
    raw = _raw_predictions(gt, perturb=False)
    inputs, outputs = _to_batches(raw, {3: 0, 7: 1}, fields=())
    inputs[0]["image_id"] = 1234
    ev.process(inputs, outputs)
    with pytest.raises(ValueError, match="image ids not in the ground truth"):
        ev.evaluate()
    ev.reset()
    outputs[1]["instances"].pred_classes[0] = 5
    ev.process(inputs[1:], outputs[1:])
    with pytest.raises(ValueError, match="predicted class 5"):
        ev.evaluate()


def test_from_dataset_uses_catalog_metadata(tmp_path, monkeypatch):
    import sys
    import types

    gt = _make_gt()
    path = _write_gt(tmp_path, gt)

    class _Meta:
        json_file = path
        thing_classes = ["dog", "person"]
        thing_dataset_id_to_contiguous_id = {7: 0, 3: 1}

    fake = types.ModuleType("detcore.engine.data")
    fake.MetadataCatalog = types.SimpleNamespace(get=lambda name: _Meta if name == "toy" else None)
    monkeypatch.setitem(sys.modules, "detcore.engine.data", fake)
    ev = COCOEvaluator.from_dataset("toy", tasks=["bbox"])
    assert ev.contiguous_id_to_dataset_id == {0: 7, 1: 3}
    assert ev.thing_classes == ["dog", "person"]


def test_mask_ap_splits_areas_by_mask_area_not_box_area(tmp_path):
    # one small ground-truth object, predicted perfectly (score 0.5), and a higher-scored false positive whose
    # mask is small (100 px) but whose box is large: with the mask area (detectron2 drops "bbox" from segm
    # results) the false positive counts in the "small" range, so APs = 50 (precision 1/2 at recall 1)
    gt = _make_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["id"] == 1]  # person [10, 20, 30, 25], small
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=False)
    p = raw[1]
    fp_mask = np.zeros((1, 200, 240), dtype=bool)
    fp_mask[0, 150:160, 100:110] = True
    p["boxes"] = np.concatenate([p["boxes"], [[60.0, 10.0, 230.0, 190.0]]])
    p["scores"] = np.array([0.5, 0.9])
    p["cats"] = np.array([3, 3])
    p["masks"] = np.concatenate([p["masks"], fp_mask])
    p["kpts"] = np.concatenate([p["kpts"], p["kpts"]])
    inputs, outputs = _to_batches(raw, {3: 0, 7: 1}, fields=("masks",))
    res = _run(COCOEvaluator(path, tasks=["segm"]), inputs, outputs)
    assert res["segm"]["APs"] == pytest.approx(50.0)
    _assert_same(
        res["segm"],
        _reference_eval(
            path, _reference_results(raw, fields=("masks",)), "segm", names_by_cat={3: "person", 7: "dog"}
        ),
    )


def test_structure_fields_and_img_ids(tmp_path):
    gt = _make_gt(persons_only=True)
    path = _write_gt(tmp_path, gt)
    raw = _raw_predictions(gt, perturb=True, seed=8)
    inputs, outputs = _to_batches(raw, {3: 0})
    for out in outputs:  # BitMasks / Keypoints instead of plain tensors
        inst = out["instances"]
        inst.pred_masks = BitMasks(inst.pred_masks)
        inst.pred_keypoints = Keypoints(inst.pred_keypoints)
    ev = COCOEvaluator(path)
    ev.reset()
    ev.process(inputs, outputs)
    ref = _reference_results(raw)
    for task in ("bbox", "segm", "keypoints"):
        _assert_same(ev.evaluate()[task], _reference_eval(path, ref, task))
        _assert_same(ev.evaluate(img_ids=[1, 5])[task], _reference_eval(path, ref, task, img_ids=[1, 5]))
    assert ev.evaluate(img_ids=[1, 5])["bbox"]["AP"] != ev.evaluate()["bbox"]["AP"]
