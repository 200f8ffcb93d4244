"""End-to-end parity with detectron2 on the tiny trained Mask R-CNN (``reference/golden/mask_rcnn_tiny``):
the model is built from the named config with overrides, loaded from the detectron2 checkpoints, and run on
every stored image as the README describes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcore.archs import build_model, get_config, load_checkpoint, load_state_dict_file

IMAGES = ["00000", "00001", "00002", "00003", "00004", "00005", "blank_noise", "blank_flat"]


@pytest.fixture(scope="module")
def model(golden_dir, tiny_overrides):
    cfg = get_config("mask_rcnn_R_50_FPN", tiny_overrides)
    m = build_model(cfg).eval()
    report = load_checkpoint(m, golden_dir / "model.pth", strict=True)
    assert report.ok and report.missing == [] and report.unexpected == []
    return m


def test_config_matches_golden_config(golden_dir, tiny_overrides):
    import yaml

    d2 = yaml.safe_load((golden_dir / "config.yaml").read_text())
    cfg = get_config("mask_rcnn_R_50_FPN", tiny_overrides)
    m = cfg.model
    assert m.backbone.resnet.stem_out_channels == d2["MODEL"]["RESNETS"]["STEM_OUT_CHANNELS"]
    assert m.backbone.fpn.out_channels == d2["MODEL"]["FPN"]["OUT_CHANNELS"]
    assert list(m.pixel_mean) == d2["MODEL"]["PIXEL_MEAN"]
    assert list(m.pixel_std) == d2["MODEL"]["PIXEL_STD"]
    assert m.input_format == d2["INPUT"]["FORMAT"]
    rpn = m.proposal_generator
    assert rpn.pre_nms_topk_test == d2["MODEL"]["RPN"]["PRE_NMS_TOPK_TEST"]
    assert rpn.post_nms_topk_test == d2["MODEL"]["RPN"]["POST_NMS_TOPK_TEST"]
    assert rpn.pre_nms_topk_train == d2["MODEL"]["RPN"]["PRE_NMS_TOPK_TRAIN"]
    assert rpn.nms_thresh == d2["MODEL"]["RPN"]["NMS_THRESH"]
    assert [list(s) for s in rpn.anchor_generator.sizes] == d2["MODEL"]["ANCHOR_GENERATOR"]["SIZES"]
    roi = m.roi_heads
    assert roi.num_classes == d2["MODEL"]["ROI_HEADS"]["NUM_CLASSES"]
    assert roi.box_predictor.test_score_thresh == d2["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"]
    assert roi.box_predictor.test_nms_thresh == d2["MODEL"]["ROI_HEADS"]["NMS_THRESH_TEST"]
    assert roi.box_predictor.test_topk_per_image == d2["TEST"]["DETECTIONS_PER_IMAGE"]
    assert list(roi.box_predictor.bbox_reg_weights) == d2["MODEL"]["ROI_BOX_HEAD"]["BBOX_REG_WEIGHTS"]
    assert roi.box_head.fc_dim == d2["MODEL"]["ROI_BOX_HEAD"]["FC_DIM"]
    assert roi.mask_head.conv_dim == d2["MODEL"]["ROI_MASK_HEAD"]["CONV_DIM"]
    assert cfg.input.min_size_test == d2["INPUT"]["MIN_SIZE_TEST"]
    assert cfg.input.max_size_test == d2["INPUT"]["MAX_SIZE_TEST"]


def test_pkl_and_pth_load_identically(golden_dir, model, tiny_overrides):
    pth = load_state_dict_file(golden_dir / "model.pth")
    pkl = load_state_dict_file(golden_dir / "model.pkl")
    assert list(pth) == list(pkl) and len(pth) == 307
    for k in pth:
        assert torch.equal(pth[k], pkl[k]), k
    cfg = get_config("mask_rcnn_R_50_FPN", tiny_overrides)
    m2 = build_model(cfg)
    report = load_checkpoint(m2, golden_dir / "model.pkl", strict=True)
    assert report.ok
    for (k, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


def _run(model, golden_dir, name):
    d = np.load(golden_dir / f"{name}.npz")
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    height, width = (int(v) for v in d["original_size"])
    captured = {}
    hooks = [
        model.backbone.register_forward_hook(lambda mod, inp, out: captured.update(features=out)),
        model.proposal_generator.register_forward_hook(
            lambda mod, inp, out: captured.update(proposals=out[0])
        ),
    ]
    try:
        with torch.no_grad():
            out = model([{"image": image, "height": height, "width": width}])
    finally:
        for h in hooks:
            h.remove()
    return d, out, captured


@pytest.mark.parametrize("name", IMAGES)
def test_golden_image(model, golden_dir, name):
    d, out, captured = _run(model, golden_dir, name)
    assert len(out) == 1 and set(out[0]) == {"instances"}
    inst = out[0]["instances"]
    height, width = (int(v) for v in d["original_size"])
    assert inst.image_size == (height, width)

    # FPN features
    for level in ("p2", "p3", "p4", "p5", "p6"):
        key = f"features/{level}"
        if key in d:
            got = captured["features"][level][0]
            torch.testing.assert_close(got, torch.as_tensor(d[key]), atol=2e-3, rtol=0)

    # proposals, as sets (blank_flat's logits tie, so its proposal set is arbitrary)
    props = captured["proposals"][0]
    assert props.image_size == tuple(int(v) for v in d["image_size_resized"])
    expected_boxes = torch.as_tensor(d["proposals/boxes"])
    assert len(props) == len(expected_boxes)
    if name != "blank_flat":
        dist = torch.cdist(expected_boxes.double(), props.proposal_boxes.tensor.double(), p=float("inf"))
        assert dist.min(dim=1).values.max().item() <= 1e-2
        dist_back = dist.min(dim=0).values
        assert dist_back.max().item() <= 1e-2

    # final detections
    boxes = torch.as_tensor(d["final/pred_boxes"])
    assert len(inst) == len(boxes)
    torch.testing.assert_close(inst.pred_boxes.tensor, boxes, atol=1e-2, rtol=0)
    torch.testing.assert_close(inst.scores, torch.as_tensor(d["final/scores"]), atol=1e-4, rtol=0)
    assert torch.equal(inst.pred_classes, torch.as_tensor(d["final/pred_classes"]))
    masks = torch.as_tensor(d["final/pred_masks"])
    assert inst.pred_masks.shape == masks.shape
    if masks.numel():
        differ = (inst.pred_masks.to(torch.uint8) != masks).float().mean().item()
        assert differ <= 1e-4


def test_do_postprocess_false_gives_resized_frame(model, golden_dir):
    d = np.load(golden_dir / "00004.npz")  # resized 240x360 -> 256x384
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    with torch.no_grad():
        raw = model.inference([{"image": image}], do_postprocess=False)[0]
    assert raw.image_size == tuple(int(v) for v in d["image_size_resized"])
    torch.testing.assert_close(raw.pred_boxes.tensor, torch.as_tensor(d["raw/pred_boxes"]), atol=1e-2, rtol=0)
    torch.testing.assert_close(raw.scores, torch.as_tensor(d["raw/scores"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(raw.pred_masks, torch.as_tensor(d["raw/mask_probs"]), atol=2e-3, rtol=0)

    # detected_instances: the mask branch alone on the stored raw detections gives the stored mask probs
    given = raw[:]
    given.remove("pred_masks")
    with torch.no_grad():
        again = model.inference([{"image": image}], detected_instances=[given], do_postprocess=False)[0]
    torch.testing.assert_close(again.pred_masks, torch.as_tensor(d["raw/mask_probs"]), atol=2e-3, rtol=0)


def test_proposal_network_golden(golden_dir, tiny_overrides):
    """ProposalNetwork on the same backbone/RPN weights (lenient load: the ROI head weights are unexpected)."""
    cfg = get_config(
        "rpn_R_50_FPN", [*tiny_overrides[:4], "model.proposal_generator.post_nms_topk_test=1000"]
    )
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="unexpected"):
        load_checkpoint(model, golden_dir / "model.pth", strict=True)
    report = load_checkpoint(model, golden_dir / "model.pth", strict=False)
    assert report.missing == [] and report.shape_mismatched == []
    assert report.unexpected and all(k.startswith("roi_heads.") for k in report.unexpected)
    d = np.load(golden_dir / "00000.npz")
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    with torch.no_grad():
        out = model([{"image": image, "height": 256, "width": 320}])
    props = out[0]["proposals"]
    expected = torch.as_tensor(d["proposals/boxes"])
    assert len(props) == len(expected)
    dist = torch.cdist(expected.double(), props.proposal_boxes.tensor.double(), p=float("inf"))
    assert dist.min(dim=1).values.max().item() <= 1e-2
    # in order except near-ties
    same = (props.proposal_boxes.tensor - expected).abs().amax(dim=1) <= 1e-2
    assert same.float().mean().item() >= 0.99
    torch.testing.assert_close(
        props.objectness_logits[same],
        torch.as_tensor(d["proposals/objectness_logits"])[same],
        atol=5e-4,
        rtol=0,
    )
