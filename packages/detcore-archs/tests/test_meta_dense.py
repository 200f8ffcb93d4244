"""RetinaNet / FCOS meta-architectures: detectron2 state-dict names, inference outputs in the requested
resolution, a training step (finite losses, gradients everywhere), input validation."""

from __future__ import annotations

import pytest
import torch

from detcore.archs import FCOS, DenseDetector, RetinaNet
from detcore.backbones.fpn import ResNetFPNConfig, build_retinanet_resnet_fpn_backbone
from detcore.heads.anchor_generator import DefaultAnchorGenerator
from detcore.heads.dense import FCOSHead, RetinaNetHead, retinanet_anchor_generator_config
from detcore.structures import Boxes, Instances

PIXEL_MEAN = [103.53, 116.28, 123.675]
PIXEL_STD = [57.375, 57.12, 58.395]


def _read_reference(path):
    expected = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        expected[key] = (tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), dtype)
    return expected


def _backbone(small: bool):
    cfg = ResNetFPNConfig.base_retinanet()
    if small:
        cfg.resnet.stem_out_channels = 8
        cfg.resnet.res2_out_channels = 16
        cfg.resnet.width_per_group = 4
        cfg.fpn.out_channels = 16
    return build_retinanet_resnet_fpn_backbone(cfg)


def _retinanet(small: bool, **kwargs) -> RetinaNet:
    backbone = _backbone(small)
    shapes = backbone.output_shape()
    feats = ["p3", "p4", "p5", "p6", "p7"]
    anchor_generator = DefaultAnchorGenerator.build(
        retinanet_anchor_generator_config(), [shapes[f] for f in feats]
    )
    num_classes = 3 if small else 80
    head = RetinaNetHead(
        input_shape=[shapes[f] for f in feats],
        num_classes=num_classes,
        num_anchors=anchor_generator.num_cell_anchors[0],
        conv_dims=[16, 16] if small else [256] * 4,
    )
    return RetinaNet(
        backbone=backbone,
        head=head,
        head_in_features=feats,
        anchor_generator=anchor_generator,
        num_classes=num_classes,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        **kwargs,
    )


def _fcos(head_in_features=("p3", "p4", "p5", "p6", "p7"), **kwargs) -> FCOS:
    backbone = _backbone(True)
    shapes = backbone.output_shape()
    feats = ["p3", "p4", "p5", "p6", "p7"]
    head = FCOSHead(input_shape=[shapes[f] for f in feats], num_classes=3, conv_dims=[16, 16])
    return FCOS(
        backbone=backbone,
        head=head,
        head_in_features=head_in_features,
        num_classes=3,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        **kwargs,
    )


def _gt(h: int, w: int, boxes: list[list[float]], classes: list[int]) -> Instances:
    t = Instances((h, w))
    t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    t.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return t


def test_retinanet_state_dict_matches_detectron2(reference_dir):
    path = reference_dir / "detectron2-state-dicts" / "retinanet_R_50_FPN.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    expected = _read_reference(path)
    with torch.device("meta"):
        model = _retinanet(small=False)
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert list(got) == list(expected)


@pytest.fixture(scope="module")
def small_retinanet():
    torch.manual_seed(0)
    return _retinanet(small=True, test_score_thresh=0.0, max_detections_per_image=50).eval()


@pytest.fixture(scope="module")
def small_fcos():
    torch.manual_seed(0)
    return _fcos(test_score_thresh=0.0, max_detections_per_image=50).eval()


@pytest.mark.parametrize("which", ["retinanet", "fcos"])
def test_inference_outputs_in_requested_resolution(which, small_retinanet, small_fcos):
    model = small_retinanet if which == "retinanet" else small_fcos
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 128, 160, generator=g) * 255
    with torch.no_grad():
        (native,) = model([{"image": image}])
        (resized,) = model([{"image": image, "height": 256, "width": 320}])
    a, b = native["instances"], resized["instances"]
    assert a.image_size == (128, 160) and b.image_size == (256, 320)
    assert 0 < len(a) <= 50 and len(a) == len(b)
    for inst, (h, w) in ((a, (128, 160)), (b, (256, 320))):
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
        boxes = inst.pred_boxes.tensor
        assert boxes.shape == (len(inst), 4)
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= h).all()
        assert (
            inst.pred_classes.dtype == torch.int64
            and ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()
        )
        assert (inst.scores[:-1] >= inst.scores[1:]).all()  # by decreasing score
    # rescaling by 2 in both directions doubles every (clipped) box
    torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor * 2)
    torch.testing.assert_close(b.scores, a.scores)


def test_inference_unpadded_size_and_batch(small_retinanet):
    g = torch.Generator().manual_seed(2)
    images = [
        torch.randint(0, 256, (3, 100, 150), dtype=torch.uint8, generator=g),
        torch.rand(3, 128, 96) * 255,
    ]
    with torch.no_grad():
        out = small_retinanet([{"image": images[0]}, {"image": images[1], "height": 64, "width": 48}])
        (alone,) = small_retinanet([{"image": images[0]}])
    assert out[0]["instances"].image_size == (100, 150)
    assert out[1]["instances"].image_size == (64, 48)
    assert (out[1]["instances"].pred_boxes.tensor[:, 0::2] <= 48).all()
    # alone or batched, the first image is padded to 128x256 (size_divisibility 128): same detections
    torch.testing.assert_close(out[0]["instances"].scores, alone["instances"].scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("which", ["retinanet", "fcos"])
def test_training_step(which):
    torch.manual_seed(0)
    model = (_retinanet(small=True) if which == "retinanet" else _fcos()).train()
    g = torch.Generator().manual_seed(3)
    inputs = [
        {
            "image": torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=g),
            "instances": _gt(128, 160, [[10.0, 12.0, 70.0, 90.0], [60.0, 30.0, 150.0, 120.0]], [0, 2]),
        },
        {
            "image": torch.rand(3, 96, 128, generator=g) * 255,
            "instances": _gt(96, 128, [[4.0, 8.0, 60.0, 50.0]], [1]),
        },
    ]
    losses = model(inputs)
    expected = (
        {"loss_cls", "loss_box_reg"}
        if which == "retinanet"
        else {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    )
    assert set(losses) == expected
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v) and v > 0, (k, v)
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    # the frozen stem (freeze_at=2) stays frozen
    assert model.backbone.bottom_up.stem.conv1.weight.grad is None


def test_retinanet_training_without_ground_truth():
    torch.manual_seed(0)
    model = _retinanet(small=True).train()
    losses = model([{"image": torch.rand(3, 64, 64) * 255, "instances": _gt(64, 64, [], [])}])
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0


@pytest.mark.parametrize(
    ("inputs", "exc", "pattern"),
    [
        ([], ValueError, "at least one image"),
        ({"image": torch.zeros(3, 32, 32)}, TypeError, "list of dicts"),
        ([{"image": torch.zeros(1, 3, 32, 32)}], ValueError, r"Tensor\[C, H, W\]"),
        ([{"image": torch.zeros(32, 32, 3)}], ValueError, "3 channels"),
        ([{"image": torch.zeros(3, 32, 32, dtype=torch.int32)}], TypeError, "uint8 or floating"),
        ([{"image": [[0.0]]}], TypeError, "torch.Tensor"),
        ([{"img": torch.zeros(3, 32, 32)}], TypeError, "'image' key"),
    ],
)
def test_bad_inputs(small_retinanet, inputs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        small_retinanet(inputs)


def test_training_needs_instances():
    model = _fcos().train()
    with pytest.raises(ValueError, match="'instances'"):
        model([{"image": torch.zeros(3, 32, 32)}])


def test_constructor_validation():
    backbone = _backbone(True)
    shapes = backbone.output_shape()
    head = RetinaNetHead(input_shape=[shapes["p3"]], num_classes=3, num_anchors=9, conv_dims=[8])
    with pytest.raises(ValueError, match="head_in_features"):
        RetinaNet(
            backbone=backbone,
            head=head,
            head_in_features=["p3", "p9"],
            anchor_generator=DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[1.0], strides=[8]),
            num_classes=3,
            pixel_mean=PIXEL_MEAN,
            pixel_std=PIXEL_STD,
        )
    with pytest.raises(ValueError, match="one level per head_in_features"):
        RetinaNet(
            backbone=backbone,
            head=head,
            head_in_features=["p3", "p4"],
            anchor_generator=DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[1.0], strides=[8]),
            num_classes=3,
            pixel_mean=PIXEL_MEAN,
            pixel_std=PIXEL_STD,
        )
    with pytest.raises(ValueError, match="pixel_mean and pixel_std"):
        FCOS(backbone=backbone, head=head, num_classes=3, pixel_mean=[1.0, 2.0, 3.0], pixel_std=[1.0])
    with pytest.raises(ValueError, match="num_classes"):
        FCOS(backbone=backbone, head=head, num_classes=0, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def test_default_head_in_features_and_registration():
    model = _fcos(head_in_features=None)  # default: every backbone output, by stride
    assert isinstance(model, DenseDetector)
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.anchor_generator.strides == [8, 16, 32, 64, 128]
    assert "anchor_generator" not in {k.split(".")[0] for k in model.state_dict()}
    from detcore.plugins import get_component

    assert get_component("meta_arch", "RetinaNet") is RetinaNet
    assert get_component("meta_arch", "FCOS") is FCOS


def test_fcos_state_dict_names():
    """detectron2's FCOS: ``backbone.*`` and ``head.{cls_subnet, bbox_subnet, cls_score, bbox_pred, ctrness}.*``."""
    with torch.device("meta"):
        model = _fcos()
    heads = sorted({k.split(".")[1] for k in model.state_dict() if k.startswith("head.")})
    assert heads == ["bbox_pred", "bbox_subnet", "cls_score", "cls_subnet", "ctrness"]
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "head"}
    assert model.state_dict()["head.ctrness.weight"].shape == (1, 16, 3, 3)
    assert model.state_dict()["head.cls_score.weight"].shape == (3, 16, 3, 3)
