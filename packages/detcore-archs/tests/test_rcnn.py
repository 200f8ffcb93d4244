"""GeneralizedRCNN / ProposalNetwork: training steps of the shipped configs, input validation, preprocessing and
post-processing (hand-computed values)."""

from __future__ import annotations

import pytest
import torch

from detcore.archs import (
    GeneralizedRCNN,
    ProposalNetwork,
    RetinaNet,
    build_model,
    detector_postprocess,
    get_config,
    sem_seg_postprocess,
)
from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks

TRAIN_CONFIGS = [
    "rpn_R_50_FPN",
    "faster_rcnn_R_50_FPN",
    "mask_rcnn_R_50_FPN",
    "faster_rcnn_R_50_C4",
    "mask_rcnn_R_50_C4",
    "faster_rcnn_R_50_DC5",
    "faster_rcnn_X_101_32x8d_FPN",
    "keypoint_rcnn_R_50_FPN",
    "mask_rcnn_R_50_FPN_dconv_c3-c5",
    "retinanet_R_50_FPN",
]


def _targets(h: int, w: int, num_classes: int, g: torch.Generator, bitmask: bool) -> Instances:
    boxes = torch.tensor([[4.0, 6.0, 40.0, 30.0], [20.0, 10.0, 60.0, 58.0]])
    t = Instances((h, w))
    t.gt_boxes = Boxes(boxes)
    t.gt_classes = torch.randint(0, num_classes, (2,), generator=g)
    if bitmask:
        m = torch.zeros(2, h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            m[i, y0:y1, x0:x1] = True
        t.gt_masks = BitMasks(m)
    else:
        t.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes.tolist()])
    kp = torch.zeros(2, 17, 3)
    kp[:, :, 0] = boxes[:, None, 0] + torch.rand(2, 17, generator=g) * (boxes[:, None, 2] - boxes[:, None, 0])
    kp[:, :, 1] = boxes[:, None, 1] + torch.rand(2, 17, generator=g) * (boxes[:, None, 3] - boxes[:, None, 1])
    kp[:, :, 2] = 2.0
    t.gt_keypoints = Keypoints(kp)
    return t


def _narrow(name: str) -> list[str]:
    """Overrides that keep an architecture (depth, blocks, heads, names) but make every layer narrow, so a
    CPU training step takes a fraction of a second."""
    cfg = get_config(name)
    m = cfg.model
    fpn = m.backbone_name in ("resnet_fpn", "retinanet_resnet_fpn")
    width = 1 if fpn and m.backbone.resnet.num_groups > 1 else 4
    res = "model.backbone.resnet." if fpn else "model.backbone."
    out = [f"{res}stem_out_channels=8", f"{res}res2_out_channels=16", f"{res}width_per_group={width}"]
    if m.backbone_name in ("resnet_fpn", "retinanet_resnet_fpn"):
        out.append("model.backbone.fpn.out_channels=16")
    if m.meta_architecture == "GeneralizedRCNN":
        if m.roi_heads_name == "Res5ROIHeads":
            out += ["model.roi_heads.res2_out_channels=16", "model.roi_heads.width_per_group=4"]
        else:
            out.append("model.roi_heads.box_head.fc_dim=32")
            if m.roi_heads.keypoint_on:
                out.append("model.roi_heads.keypoint_head.conv_dims=[16, 16]")
        if m.roi_heads.mask_on:
            out.append("model.roi_heads.mask_head.conv_dim=16")
    return out


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_training_step(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = get_config(name, _narrow(name))
    full = get_config(name)
    assert cfg.model.backbone_name == full.model.backbone_name
    assert cfg.model.roi_heads_name == full.model.roi_heads_name
    model = build_model(cfg).train()
    if cfg.model.meta_architecture == "RetinaNet":
        num_classes = cfg.model.retinanet.num_classes
    else:
        num_classes = getattr(cfg.model.roi_heads, "num_classes", 80)
    inputs = [
        {
            "image": torch.randint(0, 256, (3, 64, 72), dtype=torch.uint8, generator=g),
            "instances": _targets(64, 72, num_classes, g, bitmask=False),
        },
        {
            "image": torch.rand(3, 60, 80, generator=g) * 255,
            "instances": _targets(60, 80, num_classes, g, bitmask=True),
        },
    ]
    losses = model(inputs)
    expected = {"loss_rpn_cls", "loss_rpn_loc"}
    if cfg.model.meta_architecture == "RetinaNet":
        expected = {"loss_cls", "loss_box_reg"}
    elif cfg.model.meta_architecture == "GeneralizedRCNN":
        expected |= {"loss_cls", "loss_box_reg"}
        if cfg.model.roi_heads.mask_on:
            expected.add("loss_mask")
        if getattr(cfg.model.roi_heads, "keypoint_on", False):
            expected.add("loss_keypoint")
    assert set(losses) == expected
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    # frozen stem (freeze_at 2) gets no gradient
    assert (
        model.backbone.bottom_up.stem.conv1.weight.grad is None
        if hasattr(model.backbone, "bottom_up")
        else True
    )


@pytest.fixture(scope="module")
def small_rcnn():
    cfg = get_config(
        "mask_rcnn_R_50_FPN",
        [
            "model.backbone.resnet.stem_out_channels=8",
            "model.backbone.resnet.res2_out_channels=16",
            "model.backbone.resnet.width_per_group=4",
            "model.backbone.fpn.out_channels=16",
            "model.roi_heads.box_head.fc_dim=32",
            "model.roi_heads.mask_head.conv_dim=16",
            "model.roi_heads.num_classes=3",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_preprocess_normalises_and_pads(small_rcnn):
    img = torch.arange(3 * 5 * 7, dtype=torch.float32).view(3, 5, 7)
    images = small_rcnn.preprocess_image([{"image": img}, {"image": img[:, :4, :6].to(torch.uint8)}])
    assert images.tensor.shape == (2, 3, 32, 32)
    assert images.image_sizes == [(5, 7), (4, 6)]
    mean = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    torch.testing.assert_close(images.tensor[0, :, :5, :7], img - mean)
    torch.testing.assert_close(images.tensor[1, :, :4, :6], img[:, :4, :6] - mean)
    assert images.tensor[0, :, 5:, :].abs().sum() == 0 and images.tensor[0, :, :, 7:].abs().sum() == 0


def test_pixel_std_divides(small_rcnn):
    model = GeneralizedRCNN(
        backbone=small_rcnn.backbone,
        proposal_generator=small_rcnn.proposal_generator,
        roi_heads=small_rcnn.roi_heads,
        pixel_mean=[1.0, 2.0, 3.0],
        pixel_std=[2.0, 4.0, 8.0],
    )
    img = torch.full((3, 2, 2), 9.0)
    t = model.preprocess_image([{"image": img}]).tensor[0, :, :2, :2]
    torch.testing.assert_close(t, torch.tensor([4.0, 1.75, 0.75]).view(3, 1, 1).expand(3, 2, 2))
    assert "pixel_mean" not in model.state_dict()


def test_inference_outputs_and_output_size(small_rcnn):
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        out = small_rcnn([{"image": img, "height": 96, "width": 128}, {"image": img}])
    assert [set(o) for o in out] == [{"instances"}, {"instances"}]
    a, b = out[0]["instances"], out[1]["instances"]
    assert a.image_size == (96, 128) and b.image_size == (48, 64)
    for inst, (h, w) in ((a, (96, 128)), (b, (48, 64))):
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert inst.pred_masks.shape == (len(inst), h, w) and inst.pred_masks.dtype == torch.bool
        bx = inst.pred_boxes.tensor
        assert (bx[:, 0] >= 0).all() and (bx[:, 2] <= w).all() and (bx[:, 3] <= h).all()
    # same image: the 2x output is the 1x output scaled (same detections)
    assert len(a) == len(b)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor * 2)


@pytest.mark.parametrize(
    ("inputs", "exc", "pattern"),
    [
        ([], ValueError, "at least one image"),
        ({"image": torch.zeros(3, 8, 8)}, TypeError, "list of dicts"),
        ([torch.zeros(3, 8, 8)], TypeError, r"batched_inputs\[0\] must be a dict"),
        ([{"img": torch.zeros(3, 8, 8)}], TypeError, "'image' key"),
        ([{"image": torch.zeros(1, 3, 8, 8)}], ValueError, r"Tensor\[C, H, W\] \(rank 3\).*\[1, 3, 8, 8\]"),
        ([{"image": torch.zeros(8, 8, 3)}], ValueError, r"3 channels.*\[8, 8, 3\]"),
        ([{"image": torch.zeros(1, 8, 8)}], ValueError, "3 channels"),
        ([{"image": torch.zeros(3, 8, 8, dtype=torch.int32)}], TypeError, "uint8 or floating.*int32"),
        ([{"image": torch.zeros(3, 8, 8).numpy()}], TypeError, "torch.Tensor"),
        ([{"image": torch.zeros(3, 8, 8), "height": -1}], ValueError, "'height'.*positive"),
    ],
)
def test_bad_inputs(small_rcnn, inputs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        small_rcnn(inputs)


def test_training_needs_instances(small_rcnn):
    small_rcnn.train()
    try:
        with pytest.raises(ValueError, match="'instances'"):
            small_rcnn([{"image": torch.zeros(3, 32, 32)}])
        with pytest.raises(RuntimeError, match="eval"):
            small_rcnn.inference([{"image": torch.zeros(3, 32, 32)}])
    finally:
        small_rcnn.eval()


def test_precomputed_proposals():
    cfg = get_config(
        "faster_rcnn_R_50_FPN",
        [
            "model.proposal_generator_name=PrecomputedProposals",
            "model.backbone.resnet.stem_out_channels=8",
            "model.backbone.resnet.res2_out_channels=16",
            "model.backbone.resnet.width_per_group=4",
            "model.backbone.fpn.out_channels=16",
            "model.roi_heads.box_head.fc_dim=16",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",
        ],
    )
    model = build_model(cfg).eval()
    assert model.proposal_generator is None
    assert not any(k.startswith("proposal_generator.") for k in model.state_dict())
    p = Instances((32, 32))
    p.proposal_boxes = Boxes(torch.tensor([[2.0, 2.0, 20.0, 20.0]]))
    p.objectness_logits = torch.tensor([1.0])
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 32, 32), "proposals": p}])
    assert len(out[0]["instances"]) >= 1
    with pytest.raises(ValueError, match="precomputed 'proposals'"):
        model([{"image": torch.zeros(3, 32, 32)}])


def test_proposal_network_outputs():
    cfg = get_config(
        "rpn_R_50_FPN",
        [
            "model.backbone.resnet.stem_out_channels=8",
            "model.backbone.resnet.res2_out_channels=16",
            "model.backbone.resnet.width_per_group=4",
            "model.backbone.fpn.out_channels=16",
        ],
    )
    model = build_model(cfg).eval()
    assert isinstance(model, ProposalNetwork)
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 40, 50) * 255, "height": 80, "width": 100}])
    props = out[0]["proposals"]
    assert set(out[0]) == {"proposals"}
    assert props.image_size == (80, 100)
    assert set(props.get_fields()) == {"proposal_boxes", "objectness_logits"}
    assert 0 < len(props) <= 2000
    b = props.proposal_boxes.tensor
    assert (b[:, 2] <= 100).all() and (b[:, 3] <= 80).all() and (b[:, 2] > b[:, 0]).all()


def test_detector_postprocess_hand_computed():
    r = Instances((10, 20))
    r.pred_boxes = Boxes(
        torch.tensor([[1.0, 2.0, 5.0, 6.0], [18.0, 8.0, 30.0, 12.0], [25.0, 1.0, 28.0, 3.0]])
    )
    r.scores = torch.tensor([0.9, 0.8, 0.7])
    r.pred_classes = torch.tensor([0, 1, 2])
    r.pred_keypoints = torch.tensor([[[1.0, 2.0, 0.5]], [[3.0, 4.0, 0.6]], [[5.0, 6.0, 0.7]]])
    r.pred_masks = torch.ones(3, 1, 28, 28)  # fine enough that every pixel centre in the box is >= 0.5
    out = detector_postprocess(r, 20, 60)  # scale x 3, y 2
    assert out.image_size == (20, 60)
    # box 1 clipped to the image; box 2 lies beyond x=60 after scaling: clipped to zero width and removed
    torch.testing.assert_close(
        out.pred_boxes.tensor, torch.tensor([[3.0, 4.0, 15.0, 12.0], [54.0, 16.0, 60.0, 20.0]])
    )
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(out.pred_keypoints, torch.tensor([[[3.0, 4.0, 0.5]], [[9.0, 8.0, 0.6]]]))
    assert out.pred_masks.shape == (2, 20, 60) and out.pred_masks.dtype == torch.bool
    expected = torch.zeros(20, 60, dtype=torch.bool)
    expected[4:12, 3:15] = True
    assert torch.equal(out.pred_masks[0], expected)
    # the input is not modified in place except its boxes (as detectron2); the output is a new Instances
    assert r.image_size == (10, 20)


def test_detector_postprocess_proposals_and_errors():
    r = Instances((10, 10))
    r.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
    r.objectness_logits = torch.tensor([0.3])
    out = detector_postprocess(r, 20, 20)
    torch.testing.assert_close(out.proposal_boxes.tensor, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="pred_boxes"):
        detector_postprocess(Instances((4, 4)), 4, 4)
    with pytest.raises(ValueError, match="output_height"):
        detector_postprocess(r, 0, 4)
    with pytest.raises(TypeError, match="Instances"):
        detector_postprocess({}, 4, 4)


def test_sem_seg_postprocess():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    out = sem_seg_postprocess(x, (2, 3), 4, 6)
    ref = torch.nn.functional.interpolate(
        x[None, :, :2, :3], size=(4, 6), mode="bilinear", align_corners=False
    )[0]
    torch.testing.assert_close(out, ref)
    assert out.shape == (2, 4, 6)
    with pytest.raises(ValueError, match=r"Tensor\[C, H, W\]"):
        sem_seg_postprocess(x[0], (2, 3), 4, 6)


def test_registered_meta_archs():
    from detcore.plugins import get_component, list_components

    assert get_component("meta_arch", "GeneralizedRCNN") is GeneralizedRCNN
    assert get_component("meta_arch", "ProposalNetwork") is ProposalNetwork
    assert {e.name for e in list_components("meta_arch")} >= {"GeneralizedRCNN", "ProposalNetwork"}
    with pytest.raises(Exception, match="GeneralizedRCNN"):
        build_model(get_config("faster_rcnn_R_50_FPN", ["model.meta_architecture=GeneralisedRCNN"]))


def test_retinanet_inference_and_config():
    cfg = get_config(
        "retinanet_R_50_FPN",
        [
            "model.backbone.resnet.stem_out_channels=8",
            "model.backbone.resnet.res2_out_channels=16",
            "model.backbone.resnet.width_per_group=4",
            "model.backbone.fpn.out_channels=16",
            "model.retinanet.num_classes=5",
            "model.retinanet.test_score_thresh=0.0",
            "model.retinanet.max_detections_per_image=7",
        ],
    )
    assert cfg.model.retinanet.smooth_l1_beta == 0.0  # Base-RetinaNet's value
    assert len(cfg.model.retinanet.anchor_generator.sizes) == 5
    model = build_model(cfg).eval()
    assert isinstance(model, RetinaNet)
    assert model.head.cls_score.out_channels == 9 * 5  # num_classes reaches the head
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192}])
    inst = out[0]["instances"]
    assert inst.image_size == (128, 192)
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
    assert 0 < len(inst) <= 7
    assert (inst.pred_classes < 5).all() and (inst.scores[:-1] >= inst.scores[1:]).all()
    b = inst.pred_boxes.tensor
    assert (b[:, 2] <= 192).all() and (b[:, 3] <= 128).all()
