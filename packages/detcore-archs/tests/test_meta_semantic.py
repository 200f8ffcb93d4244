"""SemanticSegmentor: detectron2 state-dict names, inference logits in the requested resolution, the
training loss against a direct cross-entropy, target padding, input validation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from detcore.archs import SemanticSegmentor
from detcore.archs.meta_arch.semantic_seg import batch_sem_seg_targets
from detcore.backbones.fpn import ResNetFPNConfig, build_resnet_fpn_backbone
from detcore.heads.sem_seg import SemSegFPNHead

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


def _model(small: bool) -> SemanticSegmentor:
    cfg = ResNetFPNConfig.base_rcnn_fpn()
    if small:
        cfg.resnet.stem_out_channels = 8
        cfg.resnet.res2_out_channels = 16
        cfg.resnet.width_per_group = 4
        cfg.fpn.out_channels = 16
    backbone = build_resnet_fpn_backbone(cfg)
    shapes = {k: v for k, v in backbone.output_shape().items() if k in ("p2", "p3", "p4", "p5")}
    if small:
        head = SemSegFPNHead(shapes, num_classes=5, conv_dims=32, common_stride=4, norm="GN")
    else:
        head = SemSegFPNHead(**SemSegFPNHead.from_config(None, backbone.output_shape()))
    return SemanticSegmentor(backbone=backbone, sem_seg_head=head, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def test_state_dict_matches_detectron2(reference_dir):
    path = reference_dir / "detectron2-state-dicts" / "semantic_R_50_FPN.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    expected = _read_reference(path)
    with torch.device("meta"):
        model = _model(small=False)
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert list(got) == list(expected)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return _model(small=True).eval()


def test_inference_shapes_and_resize(small_model):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 100, 150, generator=g) * 255
    with torch.no_grad():
        (native,) = small_model([{"image": image}])
        (resized,) = small_model([{"image": image, "height": 200, "width": 300}])
    assert set(native) == {"sem_seg"}
    assert native["sem_seg"].shape == (5, 100, 150)
    assert resized["sem_seg"].shape == (5, 200, 300)
    assert torch.isfinite(resized["sem_seg"]).all()
    # the padded prediction is cropped to 100x150 then resized: the same as resizing the native output
    expected = F.interpolate(native["sem_seg"][None], size=(200, 300), mode="bilinear", align_corners=False)[
        0
    ]
    torch.testing.assert_close(resized["sem_seg"], expected)


def test_training_loss_equals_cross_entropy_and_gradients():
    torch.manual_seed(0)
    model = _model(small=True)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 128, 160, generator=g) * 255  # multiple of 32: no padding
    target = torch.randint(0, 5, (128, 160), generator=g)
    target[:20, :30] = 255  # ignored
    model.train()
    losses = model([{"image": image, "sem_seg": target}])
    assert set(losses) == {"loss_sem_seg"}
    loss = losses["loss_sem_seg"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    # no train/eval difference in the layers (FrozenBN, GN), so the loss is the cross-entropy of the
    # inference logits with the ignored pixels left out
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image}])
    valid = target != 255
    expected = F.cross_entropy(out["sem_seg"].double().permute(1, 2, 0)[valid], target[valid])
    torch.testing.assert_close(loss.detach().double(), expected, atol=1e-5, rtol=1e-5)


def test_targets_padded_with_ignore_value(small_model):
    images = [torch.rand(3, 100, 150) * 255, torch.rand(3, 70, 90) * 255]
    targets = [torch.full((100, 150), 1, dtype=torch.uint8), torch.full((70, 90), 2, dtype=torch.int64)]
    inputs = [{"image": i, "sem_seg": t} for i, t in zip(images, targets)]
    batch = small_model.preprocess_image(inputs)
    t = batch_sem_seg_targets(inputs, batch, small_model.backbone, 255, torch.device("cpu"))
    assert t.shape == (2, 128, 160) and t.dtype == torch.int64
    assert (t[0, :100, :150] == 1).all() and (t[1, :70, :90] == 2).all()
    assert (t[0, 100:] == 255).all() and (t[0, :, 150:] == 255).all()
    assert (t[1, 70:] == 255).all() and (t[1, :, 90:] == 255).all()
    # a batch of two images of different sizes trains
    model = _model(small=True).train()
    losses = model(inputs)
    assert torch.isfinite(losses["loss_sem_seg"])


@pytest.mark.parametrize(
    ("inputs", "exc", "pattern"),
    [
        ([{"image": torch.zeros(3, 32, 32)}], ValueError, "'sem_seg' ground truth"),
        (
            [{"image": torch.zeros(3, 32, 32), "sem_seg": torch.zeros(32, 32)}],
            TypeError,
            "integer class labels",
        ),
        (
            [{"image": torch.zeros(3, 32, 32), "sem_seg": torch.zeros(1, 32, 32, dtype=torch.long)}],
            ValueError,
            r"Tensor\[H, W\] with the image's size \[32, 32\]",
        ),
        (
            [{"image": torch.zeros(3, 32, 32), "sem_seg": torch.zeros(32, 30, dtype=torch.long)}],
            ValueError,
            r"image's size",
        ),
        ([{"image": torch.zeros(3, 32, 32), "sem_seg": [[0]]}], TypeError, r"Tensor\[H, W\]"),
        ([], ValueError, "at least one image"),
        ([{"image": torch.zeros(4, 32, 32)}], ValueError, "3 channels"),
    ],
)
def test_bad_training_inputs(inputs, exc, pattern):
    model = _model(small=True).train()
    with pytest.raises(exc, match=pattern):
        model(inputs)


@pytest.mark.parametrize(
    ("inputs", "exc", "pattern"),
    [
        ([{"image": torch.zeros(32, 32)}], ValueError, r"Tensor\[C, H, W\]"),
        ([{"image": torch.zeros(3, 32, 32, dtype=torch.bool)}], TypeError, "uint8 or floating"),
    ],
)
def test_bad_inference_inputs(small_model, inputs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        small_model(inputs)


def test_registered():
    from detcore.plugins import get_component

    assert get_component("meta_arch", "SemanticSegmentor") is SemanticSegmentor
