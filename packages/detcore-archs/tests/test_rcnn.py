"""GeneralizedRCNN / ProposalNetwork: training steps of the shipped configs, input validation, preprocessing and
post-processing (hand-computed values)."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
import yaml

from detcore.archs import (
    GeneralizedRCNN,
    ProposalNetwork,
    RetinaNet,
    build_model,
    detector_postprocess,
    get_config,
    list_configs,
    sem_seg_postprocess,
)
from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks, RotatedBoxes


def _alias_target(name: str) -> str | None:
    """The config a named config is an alias of (its YAML is only ``_base_: <other>.yaml``), else None."""
    text = (resources.files("detcore.archs") / "configs" / f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    if set(data) == {"_base_"} and isinstance(data["_base_"], str) and not data["_base_"].startswith("Base-"):
        return data["_base_"][: -len(".yaml")]
    return None


def _final_target(name: str) -> str:
    while (t := _alias_target(name)) is not None:
        name = t
    return name


ALIASES = {n: _final_target(n) for n in list_configs() if _alias_target(n) is not None}
# every named config shipped with detcore.archs, aliases once (test_aliases_equal_their_targets)
TRAIN_CONFIGS = [n for n in list_configs() if n not in ALIASES]


def test_aliases_equal_their_targets():
    assert {"mask_rcnn_R_50_FPN", "cascade_mask_rcnn_R_50_FPN", "fcos_R_50_FPN"} <= set(ALIASES)
    for alias, target in ALIASES.items():
        assert target in TRAIN_CONFIGS, alias
        assert get_config(alias) == get_config(target), alias


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


def _rotated_targets(h: int, w: int, num_classes: int, g: torch.Generator) -> Instances:
    t = Instances((h, w))
    t.gt_boxes = RotatedBoxes(torch.tensor([[22.0, 18.0, 36.0, 24.0, 0.0], [40.0, 34.0, 40.0, 30.0, 30.0]]))
    t.gt_classes = torch.randint(0, num_classes, (2,), generator=g)
    return t


def _narrow(name: str) -> list[str]:
    """Overrides that keep an architecture (depth, blocks, heads, names) but make every layer narrow, so a
    CPU training step takes a fraction of a second."""
    cfg = get_config(name)
    m = cfg.model
    fpn = m.backbone_name in ("resnet_fpn", "retinanet_resnet_fpn", "fcos_resnet_fpn")
    width = 1 if fpn and m.backbone.resnet.num_groups > 1 else 4
    res = "model.backbone.resnet." if fpn else "model.backbone."
    out = [f"{res}stem_out_channels=8", f"{res}res2_out_channels=16", f"{res}width_per_group={width}"]
    if fpn:
        # GroupNorm(32) in the FCOS / semantic heads needs multiples of 32 channels (FCOS: 2 per group, for
        # the 1x1 p7 map of a small image)
        fpn_channels = {"FCOS": 64, "SemanticSegmentor": 32, "PanopticFPN": 32}.get(m.meta_architecture, 16)
        out.append(f"model.backbone.fpn.out_channels={fpn_channels}")
    if m.meta_architecture in ("SemanticSegmentor", "PanopticFPN"):
        out.append("model.sem_seg_head.conv_dims=32")
    if m.meta_architecture in ("GeneralizedRCNN", "PanopticFPN"):
        out.append("model.roi_heads.batch_size_per_image=64")
        if m.roi_heads_name == "Res5ROIHeads":
            out += ["model.roi_heads.res2_out_channels=16", "model.roi_heads.width_per_group=4"]
        else:
            out.append("model.roi_heads.box_head.fc_dim=32")
            if m.roi_heads.keypoint_on:
                out.append("model.roi_heads.keypoint_head.conv_dims=[16, 16]")
        if m.roi_heads.mask_on:
            out.append("model.roi_heads.mask_head.conv_dim=16")
    return out


def _num_classes(cfg) -> int:
    m = cfg.model
    if m.meta_architecture == "RetinaNet":
        return m.retinanet.num_classes
    if m.meta_architecture == "FCOS":
        return m.fcos.num_classes
    return getattr(m.roi_heads, "num_classes", 80)


def _expected_losses(cfg) -> set[str]:
    m = cfg.model
    arch = m.meta_architecture
    if arch == "RetinaNet":
        return {"loss_cls", "loss_box_reg"}
    if arch == "FCOS":
        return {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    if arch == "SemanticSegmentor":
        return {"loss_sem_seg"}
    expected = {"loss_rpn_cls", "loss_rpn_loc"}
    if arch == "ProposalNetwork":
        return expected
    if m.roi_heads_name == "CascadeROIHeads":
        n = len(m.roi_heads.cascade_ious)
        expected |= {f"{k}_stage{i}" for k in ("loss_cls", "loss_box_reg") for i in range(n)}
    else:
        expected |= {"loss_cls", "loss_box_reg"}
    if m.roi_heads.mask_on:
        expected.add("loss_mask")
    if getattr(m.roi_heads, "keypoint_on", False):
        expected.add("loss_keypoint")
    if arch == "PanopticFPN":
        expected.add("loss_sem_seg")
    return expected


def _train_inputs(cfg, g: torch.Generator) -> list[dict]:
    num_classes = _num_classes(cfg)
    rotated = cfg.model.proposal_generator_name == "RRPN"
    inputs = []
    for i, (h, w) in enumerate(((64, 72), (60, 80))):
        if i == 0:
            image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        else:
            image = torch.rand(3, h, w, generator=g) * 255
        x = {"image": image}
        if rotated:
            x["instances"] = _rotated_targets(h, w, num_classes, g)
        else:
            x["instances"] = _targets(h, w, num_classes, g, bitmask=i == 1)
        if cfg.model.meta_architecture in ("SemanticSegmentor", "PanopticFPN"):
            sem = torch.randint(0, cfg.model.sem_seg_head.num_classes, (h, w), generator=g)
            sem[:4] = cfg.model.sem_seg_head.ignore_value
            x["sem_seg"] = sem
        inputs.append(x)
    return inputs


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_training_step_and_inference(name):
    """Every named config, narrowed: one training step (finite losses and gradients), then CPU inference."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = get_config(name, _narrow(name))
    full = get_config(name)
    assert cfg.model.meta_architecture == full.model.meta_architecture
    assert cfg.model.backbone_name == full.model.backbone_name
    assert cfg.model.roi_heads_name == full.model.roi_heads_name
    assert cfg.model.proposal_generator_name == full.model.proposal_generator_name
    model = build_model(cfg).train()
    losses = model(_train_inputs(cfg, g))
    assert set(losses) == _expected_losses(cfg)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    # the stem gets a gradient exactly when the config trains it (freeze_at 0; the zoo's freeze_at 2 freezes it)
    if hasattr(model.backbone, "bottom_up"):
        stem_grad = model.backbone.bottom_up.stem.conv1.weight.grad
        assert (stem_grad is None) == (cfg.model.backbone.resnet.freeze_at >= 1), (
            cfg.model.backbone.resnet.freeze_at
        )

    model.eval()
    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        out = model([{"image": img, "height": 100, "width": 140}])
    assert len(out) == 1
    arch = cfg.model.meta_architecture
    if arch == "ProposalNetwork":
        assert set(out[0]) == {"proposals"}
        assert out[0]["proposals"].image_size == (100, 140)
        return
    if arch in ("SemanticSegmentor", "PanopticFPN"):
        sem = out[0]["sem_seg"]
        assert sem.shape == (cfg.model.sem_seg_head.num_classes, 100, 140) and torch.isfinite(sem).all()
    if arch == "SemanticSegmentor":
        assert set(out[0]) == {"sem_seg"}
        return
    if arch == "PanopticFPN":
        assert set(out[0]) == {"sem_seg", "instances", "panoptic_seg"}
        pan, info = out[0]["panoptic_seg"]
        assert pan.shape == (100, 140) and pan.dtype == torch.int32
        assert int(pan.max()) == len(info)
    inst = out[0]["instances"]
    assert inst.image_size == (100, 140)
    assert torch.isfinite(inst.scores).all()
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < _num_classes(cfg))).all()
    box_dim = 5 if cfg.model.roi_heads_name == "RROIHeads" and arch != "FCOS" else 4
    if arch in ("RetinaNet", "FCOS"):
        box_dim = 4
    assert inst.pred_boxes.tensor.shape == (len(inst), box_dim)


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
