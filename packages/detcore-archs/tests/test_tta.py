"""Test-time augmentation: DatasetMapperTTA sizes, pixels and transforms against hand-computed values and a
float64 bilinear reference; GeneralizedRCNNWithTTA on the golden tiny Mask R-CNN (one augmentation equals the
plain model exactly; with flips and several sizes the merged boxes equal a float64 replay of the merge and the
masks a replay of the averaging); bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detcore.archs import (
    DatasetMapperTTA,
    GeneralizedRCNNWithTTA,
    build_model,
    detector_postprocess,
    from_detectron2_config,
    get_config,
    load_checkpoint,
)
from detcore.structures import Boxes, Instances


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny model is fastest on one thread, and the tests share the machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------------
# references


def _bilinear_ref(img: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Bilinear resize of ``img (Tensor[C, H, W])`` in float64, half-pixel centres (align_corners=False),
    no antialiasing, edges clamped."""
    img = img.double()
    _, h, w = img.shape

    def axis(n_in: int, n_out: int):
        src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
        src = src.clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(h, new_h)
    x0, x1, lx = axis(w, new_w)
    rows = img[:, y0, :] * (1 - ly)[None, :, None] + img[:, y1, :] * ly[None, :, None]
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx


def _iou64(a: torch.Tensor, b: torch.Tensor) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _merge_ref(boxes, scores, classes, hw, nms_thresh, topk):
    """detectron2's merge in float64: clip to the image, greedy per-class NMS (suppress IoU > thresh) in
    decreasing score order, the first ``topk``. Returns the kept indices."""
    boxes = boxes.double().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, hw[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, hw[0])
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(
            int(classes[j]) != int(classes[i]) or _iou64(boxes[i].tolist(), boxes[j].tolist()) <= nms_thresh
            for j in keep
        ):
            keep.append(i)
    return keep[:topk], boxes


# ----------------------------------------------------------------------------------------------------------
# DatasetMapperTTA


def _image(h: int, w: int, c: int = 3, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (c, h, w), generator=g)
    return img.to(dtype)


def test_mapper_sizes_and_order_hand_computed():
    # 256 x 320 (h < w): short edge 200 -> 200 x 250; 300 -> 300 x 375, long edge 375 > 360 -> x0.96 = 288 x 360;
    # 120 -> 120 x 150
    mapper = DatasetMapperTTA([200, 300, 120], 360, True)
    out = mapper({"image": _image(256, 320), "height": 256, "width": 320, "image_id": 7, "meta": [1, 2]})
    assert len(out) == 6
    assert [tuple(o["image"].shape) for o in out] == [
        (3, 200, 250),
        (3, 200, 250),
        (3, 288, 360),
        (3, 288, 360),
        (3, 120, 150),
        (3, 120, 150),
    ]
    for k in range(3):
        assert torch.equal(out[2 * k + 1]["image"], out[2 * k]["image"].flip(-1))
        assert [type(t).__name__ for t in out[2 * k]["transforms"]] == ["_ResizeTransform"]
        assert [type(t).__name__ for t in out[2 * k + 1]["transforms"]] == [
            "_ResizeTransform",
            "_HFlipTransform",
        ]
    for o in out:
        assert o["image_id"] == 7 and o["meta"] == [1, 2] and (o["height"], o["width"]) == (256, 320)
    assert out[0]["meta"] is not out[1]["meta"]  # deep copies

    # portrait 320 x 256 -> 250 x 200; rounding half up: 255 x 321 at 100 -> 100 x 125.88 -> 100 x 126
    portrait = DatasetMapperTTA([200], 1000, False)({"image": _image(320, 256)})
    assert len(portrait) == 1 and tuple(portrait[0]["image"].shape) == (3, 250, 200)
    odd = DatasetMapperTTA([100], 1000, False)({"image": _image(255, 321)})
    assert tuple(odd[0]["image"].shape) == (3, 100, 126)
    # same size: the image is unchanged (a copy)
    img = _image(256, 320)
    same = DatasetMapperTTA([256], 4000, False)({"image": img})[0]["image"]
    assert torch.equal(same, img) and same.data_ptr() != img.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("hw", "min_size", "new_hw"), [((256, 320), 100, (100, 125)), ((40, 50), 300, (300, 375))]
)
def test_mapper_float_pixels_match_float64_bilinear(dtype, hw, min_size, new_hw):  # down and up
    img = _image(*hw, dtype=dtype)
    out = DatasetMapperTTA([min_size], 10_000, True)({"image": img})
    h, w = out[0]["image"].shape[1:]
    assert (h, w) == new_hw
    ref = _bilinear_ref(img, h, w)
    assert out[0]["image"].dtype == dtype
    # float32: source positions are computed in float32 (~2e-5 px at 320 px), times pixel values up to 255
    # (float16: computed in float32, rounded to float16: 0.125 apart near 255)
    atol = {torch.float16: 0.07, torch.float32: 1e-2, torch.float64: 1e-9}[dtype]
    torch.testing.assert_close(out[0]["image"].double(), ref, atol=atol, rtol=0)
    torch.testing.assert_close(out[1]["image"].double(), ref.flip(-1), atol=atol, rtol=0)


def test_mapper_uint8_is_pillow_bilinear():
    img = _image(40, 50, dtype=torch.uint8)
    up = DatasetMapperTTA([80], 10_000, False)({"image": img})[0]["image"]
    assert up.dtype == torch.uint8 and tuple(up.shape) == (3, 80, 100)
    # upsampling: Pillow's bilinear is plain bilinear, up to rounding to uint8
    assert (up.double() - _bilinear_ref(img, 80, 100)).abs().max().item() <= 1.0
    # every channel as Pillow resizes it on its own (downsampling, antialiased)
    big = _image(256, 320, dtype=torch.uint8, seed=1)
    down = DatasetMapperTTA([100], 10_000, False)({"image": big})[0]["image"]
    for c in range(3):
        plane = Image.fromarray(big[c].numpy()).resize((125, 100), Image.BILINEAR)
        assert torch.equal(down[c], torch.from_numpy(np.array(plane)))
    # one-channel images
    gray = DatasetMapperTTA([100], 10_000, True)({"image": big[:1]})
    assert torch.equal(gray[0]["image"], down[:1]) and torch.equal(gray[1]["image"], down[:1].flip(-1))


def test_mapper_transforms_map_boxes_hand_computed():
    out = DatasetMapperTTA([200], 4000, True)({"image": _image(256, 320), "height": 256, "width": 320})
    box = torch.tensor([[10.0, 20.0, 110.0, 60.0]])
    # resize 256 x 320 -> 200 x 250: both scales 0.78125
    torch.testing.assert_close(
        out[0]["transforms"].apply_box(box), torch.tensor([[7.8125, 15.625, 85.9375, 46.875]]), atol=0, rtol=0
    )
    # then flip in width 250: x -> 250 - x, corners swap
    flipped = out[1]["transforms"].apply_box(box)
    torch.testing.assert_close(flipped, torch.tensor([[164.0625, 15.625, 242.1875, 46.875]]), atol=0, rtol=0)
    torch.testing.assert_close(out[1]["transforms"].inverse().apply_box(flipped), box, atol=1e-5, rtol=0)
    # numpy boxes (detectron2's interface) keep their dtype
    np_out = out[1]["transforms"].apply_box(box.numpy().astype(np.float64))
    assert np_out.dtype == np.float64
    np.testing.assert_allclose(np_out, [[164.0625, 15.625, 242.1875, 46.875]], atol=1e-12)


def test_mapper_input_already_resized():
    # original 240 x 360, the model input was resized to 256 x 384 (detectron2's test resize); TTA sizes 128:
    # 128 x 192; the transforms go from the original image: x * 192 / 360, y * 128 / 240
    out = DatasetMapperTTA([128], 4000, True)({"image": _image(256, 384), "height": 240, "width": 360})
    assert tuple(out[0]["image"].shape) == (3, 128, 192)
    box = torch.tensor([[36.0, 24.0, 180.0, 120.0]], dtype=torch.float64)
    sx, sy = 192 / 360, 128 / 240
    expected = torch.tensor([[36 * sx, 24 * sy, 180 * sx, 120 * sy]], dtype=torch.float64)
    torch.testing.assert_close(out[0]["transforms"].apply_box(box), expected, atol=1e-12, rtol=0)
    flipped = torch.tensor([[192 - 180 * sx, 24 * sy, 192 - 36 * sx, 120 * sy]], dtype=torch.float64)
    torch.testing.assert_close(out[1]["transforms"].apply_box(box), flipped, atol=1e-12, rtol=0)


def test_mapper_from_config():
    cfg = get_config("mask_rcnn_R_50_FPN")
    assert cfg.test.aug.enabled is False
    kwargs = DatasetMapperTTA.from_config(cfg)
    assert kwargs == {
        "min_sizes": [400, 500, 600, 700, 800, 900, 1000, 1100, 1200],
        "max_size": 4000,
        "flip": True,
    }
    cfg = get_config("mask_rcnn_R_50_FPN", ["test.aug.min_sizes=[256, 320]", "test.aug.flip=false"])
    mapper = DatasetMapperTTA(**DatasetMapperTTA.from_config(cfg))
    assert (mapper.min_sizes, mapper.max_size, mapper.flip) == ((256, 320), 4000, False)
    assert DatasetMapperTTA.from_config(cfg.test.aug) == DatasetMapperTTA.from_config(cfg)
    # detectron2's TEST.AUG section
    d2 = from_detectron2_config(
        {"TEST": {"AUG": {"ENABLED": True, "MIN_SIZES": "(256, 320)", "FLIP": False}}}
    )
    assert d2.test.aug == dataclasses.replace(cfg.test.aug, enabled=True)
    with pytest.raises(TypeError, match="Config"):
        DatasetMapperTTA.from_config({"min_sizes": [1]})
    with pytest.raises(ValueError, match=r"test\.aug\.max_size"):
        get_config("mask_rcnn_R_50_FPN", ["test.aug.max_size=big"])


def test_mapper_bad_input():
    with pytest.raises(ValueError, match="min_sizes"):
        DatasetMapperTTA([], 100, True)
    with pytest.raises(ValueError, match=r"min_sizes\[1\]"):
        DatasetMapperTTA([100, 0], 100, True)
    with pytest.raises(ValueError, match="min_sizes"):
        DatasetMapperTTA("800", 100, True)
    with pytest.raises(ValueError, match="max_size"):
        DatasetMapperTTA([100], -1, True)
    with pytest.raises(TypeError, match="flip"):
        DatasetMapperTTA([100], 100, "yes")
    mapper = DatasetMapperTTA([100], 1000, True)
    with pytest.raises(TypeError, match="'image'"):
        mapper({"file_name": "x.jpg"})
    with pytest.raises(ValueError, match=r"Tensor\[C, H, W\]"):
        mapper({"image": torch.zeros(20, 30)})
    with pytest.raises(TypeError, match="uint8 or floating"):
        mapper({"image": torch.zeros(3, 20, 30, dtype=torch.int32)})
    with pytest.raises(ValueError, match="'height' and 'width'"):
        mapper({"image": torch.zeros(3, 20, 30), "height": 20})
    with pytest.raises(ValueError, match="positive int"):
        mapper({"image": torch.zeros(3, 20, 30), "height": -20, "width": 30})


# ----------------------------------------------------------------------------------------------------------
# GeneralizedRCNNWithTTA on the golden tiny Mask R-CNN


@pytest.fixture(scope="module")
def cfg(tiny_overrides):
    return get_config("mask_rcnn_R_50_FPN", tiny_overrides)


@pytest.fixture(scope="module")
def model(golden_dir, cfg):
    m = build_model(cfg).eval()
    assert load_checkpoint(m, golden_dir / "model.pth", strict=True).ok
    return m


def _input(golden_dir, name: str) -> dict:
    d = np.load(golden_dir / f"{name}.npz")
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    height, width = (int(v) for v in d["original_size"])
    return {"image": image, "height": height, "width": width}


def _assert_same_instances(a: Instances, b: Instances, masks: bool) -> None:
    assert a.image_size == b.image_size
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert a.has("pred_masks") == masks and b.has("pred_masks") == masks
    if masks:
        assert torch.equal(a.pred_masks, b.pred_masks)


@pytest.mark.parametrize("name", ["00000", "00005"])  # 256 x 320; 256 x 300 (padded to 320)
def test_single_augmentation_equals_plain_model_exactly(model, cfg, golden_dir, name):
    inp = _input(golden_dir, name)
    tta = GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([256], 4000, False))
    with torch.no_grad():
        plain = model([inp])[0]["instances"]
        out = tta([inp])
    assert len(out) == 1 and set(out[0]) == {"instances"}
    assert len(plain) > 0
    _assert_same_instances(out[0]["instances"], plain, masks=True)
    assert model.roi_heads.mask_on and not model.roi_heads.keypoint_on  # restored


def test_single_augmentation_resized_input(model, cfg, golden_dir):
    # 00004: original 240 x 360, input 256 x 384; boxes go back through the input resize (float64 here, a
    # float32 scale in detector_postprocess: equal to ~1 ulp)
    inp = _input(golden_dir, "00004")
    tta = GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([256], 384, False))
    with torch.no_grad():
        plain = model([inp])[0]["instances"]
        out = tta([inp])[0]["instances"]
    assert out.image_size == plain.image_size == (240, 360)
    assert len(out) == len(plain) == 53
    torch.testing.assert_close(out.pred_boxes.tensor, plain.pred_boxes.tensor, atol=1e-4, rtol=0)
    assert torch.equal(out.scores, plain.scores) and torch.equal(out.pred_classes, plain.pred_classes)
    assert (out.pred_masks != plain.pred_masks).float().mean().item() <= 1e-4


def test_single_augmentation_faster_rcnn(golden_dir, tiny_overrides):
    cfg = get_config("mask_rcnn_R_50_FPN", [*tiny_overrides, "model.roi_heads.mask_on=false"])
    model = build_model(cfg).eval()
    report = load_checkpoint(model, golden_dir / "model.pth", strict=False)
    assert report.missing == [] and all(k.startswith("roi_heads.mask_head.") for k in report.unexpected)
    inp = _input(golden_dir, "00001")
    tta = GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([256], 4000, False))
    with torch.no_grad():
        plain = model([inp])[0]["instances"]
        out = tta([inp])[0]["instances"]
    assert len(plain) > 0
    _assert_same_instances(out, plain, masks=False)


_NARROW = [
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.box_predictor.test_score_thresh=0.0",  # random weights: keep 100 detections
]
_NARROW_C4 = [
    "model.backbone.stem_out_channels=8",
    "model.backbone.res2_out_channels=16",
    "model.backbone.width_per_group=4",
    "model.roi_heads.res2_out_channels=16",
    "model.roi_heads.width_per_group=4",
]
_NARROW_FPN = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("mask_rcnn_R_50_C4", _NARROW_C4), ("cascade_mask_rcnn_R_50_FPN", _NARROW_FPN)],
)
def test_single_augmentation_c4_and_cascade(name, overrides):
    """Res5ROIHeads (mask branch on the res5 features) and CascadeROIHeads (the last stage's NMS settings),
    narrow and randomly initialised."""
    torch.manual_seed(0)
    cfg = get_config(name, [*overrides, *_NARROW])
    model = build_model(cfg).eval()
    inp = {"image": torch.rand(3, 128, 160) * 255, "height": 128, "width": 160}
    with torch.no_grad():
        plain = model([inp])[0]["instances"]
        out = GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([128], 4000, False))([inp])[0]["instances"]
        assert len(plain) == 100
        _assert_same_instances(out, plain, masks=True)
        out = GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([96, 128], 4000, True))([inp])[0][
            "instances"
        ]
    assert len(out) == 100 and out.pred_masks.shape == (100, 128, 160)


def test_flip_and_sizes_match_float64_replay(model, cfg, golden_dir):
    """Merged boxes against a replay: raw detections of each augmented input mapped back by hand in float64
    (un-flip, rescale), clipped and merged by a float64 greedy per-class NMS; masks against the average of the
    mask branch run on the merged boxes mapped into each input by hand, flipped masks mirrored back."""
    inp = _input(golden_dir, "00004")  # original 240 x 360, input 256 x 384
    height, width = inp["height"], inp["width"]
    mapper = DatasetMapperTTA([192, 256], 320, True)  # 192 x 288 and 213 x 320, each also flipped
    # one input per model call, as the replay (batched inputs of different sizes are padded to a common size,
    # which changes the detections a little, in detectron2 too)
    tta = GeneralizedRCNNWithTTA(cfg, model, mapper, batch_size=1)
    with torch.no_grad():
        out = tta([inp])[0]["instances"]
        augs = mapper(inp)
        assert [tuple(a["image"].shape[1:]) for a in augs] == [(192, 288), (192, 288), (213, 320), (213, 320)]
        boxes, scores, classes = [], [], []
        for k, a in enumerate(augs):
            raw = model.inference([{"image": a["image"]}], do_postprocess=False)[0]
            h, w = a["image"].shape[1:]
            b = raw.pred_boxes.tensor.double()
            if k % 2 == 1:  # flipped: x -> w - x
                b = torch.stack((w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]), dim=1)
            boxes.append(
                b * torch.tensor([width / w, height / h, width / w, height / h], dtype=torch.float64)
            )
            scores.append(raw.scores)
            classes.append(raw.pred_classes)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        keep, clipped = _merge_ref(boxes, scores, classes, (height, width), 0.5, 100)

        assert out.image_size == (height, width)
        assert len(out) == len(keep) == 91  # below detections_per_image (100)
        torch.testing.assert_close(out.pred_boxes.tensor.double(), clipped[keep], atol=1e-3, rtol=0)
        assert torch.equal(out.scores, scores[keep])
        assert torch.equal(out.pred_classes, classes[keep])

        # masks: the mask branch on the merged boxes in each input's frame, flipped ones mirrored back
        merged = out.pred_boxes.tensor.double()
        probs = []
        for k, a in enumerate(augs):
            h, w = a["image"].shape[1:]
            b = merged * torch.tensor([w / width, h / height, w / width, h / height], dtype=torch.float64)
            if k % 2 == 1:
                b = torch.stack((w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]), dim=1)
            given = Instances((h, w), pred_boxes=Boxes(b.float()), pred_classes=out.pred_classes)
            m = model.inference([{"image": a["image"]}], [given], do_postprocess=False)[0].pred_masks
            probs.append(m.flip(-1) if k % 2 == 1 else m)
        ref = Instances((height, width), pred_boxes=Boxes(out.pred_boxes.tensor.clone()))
        ref.pred_masks = torch.stack(probs).double().mean(dim=0).float()
        ref = detector_postprocess(ref, height, width)
    assert out.pred_masks.shape == ref.pred_masks.shape == (91, height, width)
    assert (out.pred_masks != ref.pred_masks).float().mean().item() <= 1e-4
    # the flip matters: averaging the flipped inputs' masks without mirroring them gives other masks
    wrong = Instances((height, width), pred_boxes=Boxes(out.pred_boxes.tensor.clone()))
    wrong.pred_masks = torch.stack([probs[k].flip(-1) if k % 2 else probs[k] for k in range(4)]).mean(dim=0)
    wrong = detector_postprocess(wrong, height, width)
    assert (out.pred_masks != wrong.pred_masks).float().mean().item() > 1e-3


def test_batch_size_does_not_change_the_result(model, cfg, golden_dir):
    inp = _input(golden_dir, "00002")
    mapper = DatasetMapperTTA([256], 4000, True)  # same-size inputs: the batches need no extra padding
    with torch.no_grad():
        one = GeneralizedRCNNWithTTA(cfg, model, mapper, batch_size=1)([inp])[0]["instances"]
        two = GeneralizedRCNNWithTTA(cfg, model, mapper, batch_size=2)([inp])[0]["instances"]
    assert len(one) == len(two) > 0
    torch.testing.assert_close(one.pred_boxes.tensor, two.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(one.scores, two.scores, atol=1e-4, rtol=0)
    assert torch.equal(one.pred_classes, two.pred_classes)
    assert (one.pred_masks != two.pred_masks).float().mean().item() <= 1e-4
    # detections_per_image (the model's test_topk_per_image) caps the merged detections
    capped = GeneralizedRCNNWithTTA(cfg, model, mapper, batch_size=2)
    assert capped.detections_per_image == 100 and capped.nms_thresh == 0.5
    capped.detections_per_image = 5
    with torch.no_grad():
        five = capped([inp])[0]["instances"]
    assert len(one) > 5 and len(five) == 5
    assert torch.equal(five.pred_boxes.tensor, two.pred_boxes.tensor[:5])
    assert torch.equal(five.pred_masks, two.pred_masks[:5])


def test_no_detections_and_default_mapper(model, cfg, golden_dir, tiny_overrides):
    # blank_flat (uniform grey): no detections on it or its mirror; the mapper comes from cfg.test.aug
    cfg = dataclasses.replace(
        cfg,
        test=dataclasses.replace(
            cfg.test, aug=dataclasses.replace(cfg.test.aug, min_sizes=(256,), max_size=400)
        ),
    )
    tta = GeneralizedRCNNWithTTA(cfg, model)
    assert isinstance(tta.tta_mapper, DatasetMapperTTA)
    assert (tta.tta_mapper.min_sizes, tta.tta_mapper.max_size, tta.tta_mapper.flip) == ((256,), 400, True)
    inp = _input(golden_dir, "blank_flat")
    del inp["height"], inp["width"]  # default: the image size
    with torch.no_grad():
        out = tta([inp])[0]["instances"]
    assert out.image_size == (256, 320) and len(out) == 0
    assert out.pred_boxes.tensor.shape == (0, 4) and out.pred_masks.shape == (0, 256, 320)


def test_mask_branch_restored_after_error(model, cfg):
    def mapper(d):
        del d
        raise RuntimeError("boom")

    tta = GeneralizedRCNNWithTTA(cfg, model, mapper)
    with pytest.raises(RuntimeError, match="boom"):
        tta([{"image": torch.zeros(3, 64, 64)}])

    def failing_inference(*args, **kwargs):
        assert model.roi_heads.mask_on is False  # off while the boxes are detected
        raise RuntimeError("inference failed")

    model.inference = failing_inference  # an instance attribute shadowing the method
    try:
        with pytest.raises(RuntimeError, match="inference failed"):
            GeneralizedRCNNWithTTA(cfg, model, DatasetMapperTTA([64], 64, False))(
                [{"image": torch.zeros(3, 64, 64)}]
            )
    finally:
        del model.inference
    assert "inference" not in vars(model)
    assert model.roi_heads.mask_on is True


# ----------------------------------------------------------------------------------------------------------
# refused models and bad input


def test_refuses_other_models(cfg, tiny_overrides):
    retinanet = build_model(get_config("retinanet_R_50_FPN"), device="meta")
    with pytest.raises(TypeError, match="GeneralizedRCNN.*got RetinaNet"):
        GeneralizedRCNNWithTTA(cfg, retinanet)
    with pytest.raises(TypeError, match="got Linear"):
        GeneralizedRCNNWithTTA(cfg, nn.Linear(2, 2))
    keypoint = build_model(get_config("keypoint_rcnn_R_50_FPN"), device="meta")
    with pytest.raises(NotImplementedError, match="keypoint.*left/right"):
        GeneralizedRCNNWithTTA(cfg, keypoint)
    precomputed = build_model(
        get_config("mask_rcnn_R_50_FPN", ["model.proposal_generator_name=PrecomputedProposals"]),
        device="meta",
    )
    with pytest.raises(NotImplementedError, match="precomputed proposals"):
        GeneralizedRCNNWithTTA(cfg, precomputed)


def test_bad_arguments_and_inputs(model, cfg):
    mapper = DatasetMapperTTA([64], 100, False)
    with pytest.raises(ValueError, match="batch_size"):
        GeneralizedRCNNWithTTA(cfg, model, mapper, batch_size=0)
    with pytest.raises(TypeError, match="tta_mapper must be callable"):
        GeneralizedRCNNWithTTA(cfg, model, tta_mapper=5)
    with pytest.raises(TypeError, match="cfg must be a Config"):
        GeneralizedRCNNWithTTA(None, model)
    tta = GeneralizedRCNNWithTTA(None, model, mapper)
    with pytest.raises(TypeError, match="batched_inputs must be a list"):
        tta({"image": torch.zeros(3, 64, 64)})
    with pytest.raises(TypeError, match=r"batched_inputs\[0\].*'image'"):
        tta([{"file_name": "a.jpg"}])
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['image'\].*Tensor\[C, H, W\]"):
        tta([{"image": torch.zeros(64, 64)}])
    with pytest.raises(ValueError, match="non-empty list"):
        GeneralizedRCNNWithTTA(None, model, lambda d: [])([{"image": torch.zeros(3, 64, 64)}])
    with pytest.raises(TypeError, match="'transforms'.*apply_box"):
        GeneralizedRCNNWithTTA(None, model, lambda d: [dict(d)])([{"image": torch.zeros(3, 64, 64)}])
    tta.train()
    try:
        with pytest.raises(RuntimeError, match="eval"):
            tta([{"image": torch.zeros(3, 64, 64)}])
    finally:
        tta.eval()
    assert not model.training
