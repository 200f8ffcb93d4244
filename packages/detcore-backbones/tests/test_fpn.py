"""FPN: shapes from the seed article, values against a float64 reference, golden detectron2 features, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detcore.backbones import (
    FPN,
    FPNConfig,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNetConfig,
    ResNetFPNConfig,
    build_fcos_resnet_fpn_backbone,
    build_resnet_backbone,
    build_resnet_fpn_backbone,
    build_retinanet_resnet_fpn_backbone,
)
from detcore.ops import ShapeSpec


def _small_bottom_up(seed: int = 0, out_features=("res2", "res3", "res4", "res5")):
    torch.manual_seed(seed)
    cfg = ResNetConfig(
        stem_out_channels=8,
        res2_out_channels=16,
        width_per_group=4,
        freeze_at=0,
        out_features=list(out_features),
    )
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_r50_fpn_shapes_from_seed_article():
    # "a single image (H=800, W=1280) ... p2 [1, 256, 200, 320] ... p6 [1, 256, 13, 20]"; shapes via meta tensors
    with torch.device("meta"):
        model = build_resnet_fpn_backbone(ResNetFPNConfig.base_rcnn_fpn())
        out = model(torch.empty(1, 3, 800, 1280))
    assert {k: list(v.shape) for k, v in out.items()} == {
        "p2": [1, 256, 200, 320],
        "p3": [1, 256, 100, 160],
        "p4": [1, 256, 50, 80],
        "p5": [1, 256, 25, 40],
        "p6": [1, 256, 13, 20],
    }
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert model.size_divisibility == 32 and model.padding_constraints == {}
    assert {k: (v.channels, v.stride) for k, v in model.output_shape().items()} == {
        "p2": (256, 4),
        "p3": (256, 8),
        "p4": (256, 16),
        "p5": (256, 32),
        "p6": (256, 64),
    }


# p3..p7 of a 256-channel FPN on a 256x384 image (strides 8..128)
P3_P7_AT_256x384 = {
    "p3": [1, 256, 32, 48],
    "p4": [1, 256, 16, 24],
    "p5": [1, 256, 8, 12],
    "p6": [1, 256, 4, 6],
    "p7": [1, 256, 2, 3],
}


def test_retinanet_fpn_levels():
    with torch.device("meta"):
        model = build_retinanet_resnet_fpn_backbone(ResNetFPNConfig.base_retinanet())
        out = model(torch.empty(1, 3, 256, 384))
    assert {k: list(v.shape) for k, v in out.items()} == P3_P7_AT_256x384
    assert model.top_block.in_feature == "res5" and model.top_block.p6.in_channels == 2048


def test_fcos_fpn_takes_p6_from_p5():
    """detectron2's FCOS: RetinaNet's backbone with top_block.in_feature "p5", in_channels = FPN width."""
    with torch.device("meta"):
        model = build_fcos_resnet_fpn_backbone(ResNetFPNConfig.base_retinanet())
        out = model(torch.empty(1, 3, 256, 384))
        retina = build_retinanet_resnet_fpn_backbone(ResNetFPNConfig.base_retinanet())
    assert {k: list(v.shape) for k, v in out.items()} == P3_P7_AT_256x384
    assert model.top_block.in_feature == "p5"
    sd, ref = model.state_dict(), retina.state_dict()
    assert list(sd) == list(ref)  # detectron2's names
    assert tuple(sd["top_block.p6.weight"].shape) == (256, 256, 3, 3)
    assert tuple(ref["top_block.p6.weight"].shape) == (256, 2048, 3, 3)
    assert all(sd[k].shape == ref[k].shape for k in sd if k != "top_block.p6.weight")
    # values: P6 = conv3x3/2(P5), P7 = conv3x3/2(relu(P6)), in float64
    cfg = ResNetFPNConfig(
        resnet=ResNetConfig(
            stem_out_channels=8,
            res2_out_channels=16,
            width_per_group=4,
            out_features=["res3", "res4", "res5"],
        ),
        fpn=FPNConfig(in_features=["res3", "res4", "res5"], out_channels=8),
    )
    torch.manual_seed(0)
    small = build_fcos_resnet_fpn_backbone(cfg).double().eval()
    with torch.no_grad():
        feats = small(torch.randn(1, 3, 64, 96, dtype=torch.float64))
        p6 = F.conv2d(feats["p5"], small.top_block.p6.weight, small.top_block.p6.bias, 2, 1)
        p7 = F.conv2d(F.relu(p6), small.top_block.p7.weight, small.top_block.p7.bias, 2, 1)
    torch.testing.assert_close(feats["p6"], p6, rtol=0, atol=0)
    torch.testing.assert_close(feats["p7"], p7, rtol=0, atol=0)


def _ref_conv(x, conv, padding):
    return F.conv2d(x, conv.weight.double(), conv.bias.double(), 1, padding)


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
@pytest.mark.parametrize("top", ["maxpool", "p6p7_res5", "p6p7_p5"])
def test_fpn_matches_float64_reference(fuse_type, top):
    bottom_up = _small_bottom_up()
    if top == "maxpool":
        top_block = LastLevelMaxPool()
    elif top == "p6p7_res5":
        top_block = LastLevelP6P7(128, 24, in_feature="res5")
    else:
        top_block = LastLevelP6P7(24, 24, in_feature="p5")
    fpn = FPN(
        bottom_up, ["res2", "res3", "res4", "res5"], 24, top_block=top_block, fuse_type=fuse_type
    ).eval()
    for m in fpn.modules():  # non-zero biases so that the reference checks them
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.normal_(m.bias, std=0.1)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got = fpn(x)
        feats = {k: v.double() for k, v in bottom_up(x).items()}
    prev = _ref_conv(feats["res5"], fpn.fpn_lateral5, 0)
    ref = {"p5": _ref_conv(prev, fpn.fpn_output5, 1)}
    for stage in (4, 3, 2):
        lat = _ref_conv(feats[f"res{stage}"], getattr(fpn, f"fpn_lateral{stage}"), 0)
        up = prev.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        prev = (lat + up) / 2 if fuse_type == "avg" else lat + up
        ref[f"p{stage}"] = _ref_conv(prev, getattr(fpn, f"fpn_output{stage}"), 1)
    if top == "maxpool":
        ref["p6"] = ref["p5"][:, :, ::2, ::2]
    else:
        src = feats["res5"] if top == "p6p7_res5" else ref["p5"]
        tb = fpn.top_block
        ref["p6"] = F.conv2d(src, tb.p6.weight.double(), tb.p6.bias.double(), 2, 1)
        ref["p7"] = F.conv2d(F.relu(ref["p6"]), tb.p7.weight.double(), tb.p7.bias.double(), 2, 1)
    assert sorted(got) == sorted(ref)
    for k in ref:
        torch.testing.assert_close(got[k].double(), ref[k], atol=1e-4, rtol=1e-4, msg=k)


def test_fpn_norm_and_square_pad():
    fpn = FPN(_small_bottom_up(), ["res3", "res4", "res5"], 32, norm="GN", top_block=None, square_pad=512)
    keys = set(fpn.state_dict())
    assert (
        "fpn_lateral3.norm.weight" in keys
        and "fpn_lateral3.bias" not in keys
        and "fpn_lateral2.weight" not in keys
    )
    assert fpn.padding_constraints == {"square_size": 512}
    assert fpn.size_divisibility == 32
    assert list(fpn.output_shape()) == ["p3", "p4", "p5"]


def test_fpn_gradients_flow():
    fpn = FPN(_small_bottom_up(), ["res4", "res5"], 16, top_block=LastLevelMaxPool()).train()
    out = fpn(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert fpn.fpn_lateral4.weight.grad is not None and fpn.bottom_up.stem.conv1.weight.grad is not None


def test_fpn_bad_inputs():
    bottom_up = _small_bottom_up()
    fpn = FPN(bottom_up, ["res2", "res3", "res4", "res5"], 16, top_block=LastLevelMaxPool())
    with pytest.raises(ValueError, match=r"\(64, 100\).*size_divisibility 32"):
        fpn(torch.randn(1, 3, 64, 100))
    with pytest.raises(ValueError, match="log2-contiguous"):
        FPN(bottom_up, ["res2", "res4"], 16)
    with pytest.raises(ValueError, match="fuse_type"):
        FPN(bottom_up, ["res4", "res5"], 16, fuse_type="max")
    with pytest.raises(ValueError, match=r"'res6'.*outputs"):
        FPN(bottom_up, ["res5", "res6"], 16)
    with pytest.raises(ValueError, match="top_block.in_feature.*'p9'"):
        FPN(bottom_up, ["res4", "res5"], 16, top_block=LastLevelP6P7(16, 16, in_feature="p9"))
    with pytest.raises(TypeError, match="bottom_up"):
        FPN(nn.Identity(), ["res5"], 16)
    with pytest.raises(ValueError, match="fpn.in_features"):
        build_resnet_fpn_backbone(ResNetFPNConfig())
    cfg = ResNetFPNConfig.base_retinanet()
    cfg.resnet.out_features = ["res3", "res4"]
    cfg.fpn.in_features = ["res3", "res4"]
    with pytest.raises(ValueError, match="res5"):
        build_retinanet_resnet_fpn_backbone(cfg)


GOLDEN_IMAGES = ["00000", "00001", "00002", "00003", "00004", "00005", "blank_noise", "blank_flat"]


@pytest.fixture(scope="module")
def golden_fpn(reference_dir):
    root = reference_dir / "golden" / "mask_rcnn_tiny"
    cfg = ResNetFPNConfig.base_rcnn_fpn()
    cfg.resnet.stem_out_channels = 16
    cfg.resnet.res2_out_channels = 32
    cfg.resnet.width_per_group = 8
    cfg.resnet.norm = "FrozenBN"
    cfg.fpn.out_channels = 64
    model = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    weights = torch.load(root / "model.pth", map_location="cpu", weights_only=True)
    state = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
    model.load_state_dict(state, strict=True)
    return root, model.eval()


def _preprocess(bgr_hwc: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(bgr_hwc.transpose(2, 0, 1).astype("float32"))
    x = x - torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))
    return x[None]


@pytest.mark.parametrize("name", GOLDEN_IMAGES)
def test_golden_fpn_features_match_detectron2(golden_fpn, name):
    root, model = golden_fpn
    data = np.load(root / f"{name}.npz")
    bgr = data["input_bgr_resized"]
    if name != "00004":  # no resize: the model input is the PNG's BGR version
        from PIL import Image

        png = np.asarray(Image.open(root / f"{name}.png").convert("RGB"))
        np.testing.assert_array_equal(png[:, :, ::-1], bgr)
    x = _preprocess(bgr)
    assert list(x.shape) == data["preprocessed_shape"].tolist()
    with torch.no_grad():
        out = model(x)
    keys = [k for k in data.files if k.startswith("features/")]
    assert keys
    for key in keys:
        expected = torch.from_numpy(data[key])
        got = out[key.split("/")[1]][0]
        assert got.shape == expected.shape, key
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=0, msg=key)
