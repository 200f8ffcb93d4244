"""Weight converters: torchvision and Caffe2/MSRA ResNet weights give the same features in detcore."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detcore.backbones import (
    BasicStem,
    BottleneckBlock,
    ResNet,
    ResNetConfig,
    build_resnet_backbone,
    convert_c2_resnet,
    convert_torchvision_resnet,
    load_c2_pkl,
)


def _randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) * 0.5 + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean.data = torch.randn(c, generator=g) * 0.1
            m.running_var.data = torch.rand(c, generator=g) + 0.5


def _torchvision_features(tv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    y = tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))
    return y, tv.fc(torch.flatten(tv.avgpool(y), 1))


def _bottleneck_stages(blocks: list[int], groups: int, width: int) -> list:
    stages = []
    in_ch, out_ch, bott = 64, 256, groups * width
    for i, n in enumerate(blocks):
        stages.append(
            ResNet.make_stage(
                BottleneckBlock,
                n,
                in_channels=in_ch,
                out_channels=out_ch,
                bottleneck_channels=bott,
                num_groups=groups,
                norm="FrozenBN",
                stride_in_1x1=False,
                stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1),
            )
        )
        in_ch, out_ch, bott = out_ch, out_ch * 2, bott * 2
    return stages


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext_small"])
def test_torchvision_resnet_converts_to_same_features(arch):
    torch.manual_seed(0)
    if arch == "resnext_small":  # ResNeXt structure (grouped 3x3), fewer blocks to keep the test fast
        tv = torchvision.models.resnet.ResNet(
            torchvision.models.resnet.Bottleneck, [1, 2, 1, 1], groups=4, width_per_group=8
        )
    else:
        tv = getattr(torchvision.models, arch)(weights=None)
    _randomize_bn(tv, 1)
    tv.eval()
    state = convert_torchvision_resnet(tv.state_dict())
    assert "stem.conv1.norm.running_var" in state and "linear.weight" in state
    assert not any("num_batches_tracked" in k for k in state)
    if arch == "resnet18":
        stages = ResNet.make_default_stages(18, norm="FrozenBN")
    elif arch == "resnet50":
        stages = _bottleneck_stages([3, 4, 6, 3], 1, 64)
    else:
        stages = _bottleneck_stages([1, 2, 1, 1], 4, 8)
    model = ResNet(
        BasicStem(3, 64, norm="FrozenBN"), stages, num_classes=1000, out_features=["res5", "linear"]
    )
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c5, logits = _torchvision_features(tv, x)
        out = model(x)
    torch.testing.assert_close(out["res5"], c5, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["linear"], logits, atol=1e-4, rtol=1e-4)


def test_torchvision_convert_matches_build_resnet_backbone_and_rejects_unknown_keys():
    tv = torchvision.models.resnet50(weights=None)
    state = convert_torchvision_resnet(tv.state_dict(), prefix="")
    state = {k: v for k, v in state.items() if not k.startswith("linear.")}
    model = build_resnet_backbone(ResNetConfig(out_features=["res5"], stride_in_1x1=False, freeze_at=0))
    model.load_state_dict(state, strict=True)
    prefixed = convert_torchvision_resnet({"conv1.weight": tv.conv1.weight}, prefix="backbone.bottom_up.")
    assert list(prefixed) == ["backbone.bottom_up.stem.conv1.weight"]
    with pytest.raises(ValueError, match="'layer1.0.se.weight'"):
        convert_torchvision_resnet({"layer1.0.se.weight": torch.zeros(1)})
    with pytest.raises(TypeError, match="conv1.weight"):
        convert_torchvision_resnet({"conv1.weight": [1.0]})


def _to_c2_name(name: str) -> str:
    """Test-side inverse mapping: detcore ResNet name -> Caffe2 blob name (written independently)."""
    if name.startswith("linear."):
        return {"weight": "fc1000_w", "bias": "fc1000_b"}[name.split(".")[1]]
    if name.startswith("stem.conv1."):
        return {"weight": "conv1_w", "norm.weight": "res_conv1_bn_s", "norm.bias": "res_conv1_bn_b"}[
            name[11:]
        ]
    stage, block, conv, *rest = name.split(".")
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[conv]
    suffix = {"weight": "w", "norm.weight": "bn_s", "norm.bias": "bn_b"}[".".join(rest)]
    return f"{stage}_{block}_{branch}_{suffix}"


@pytest.mark.parametrize("layout", ["blobs", "flat"])
def test_c2_pkl_round_trip(tmp_path, layout):
    torch.manual_seed(0)
    cfg = ResNetConfig(
        depth=50,
        stem_out_channels=8,
        res2_out_channels=16,
        width_per_group=4,
        out_features=["res5"],
        freeze_at=0,
    )
    src = build_resnet_backbone(cfg)
    src = ResNet(src.stem, [list(s) for s in src.stages], num_classes=5, out_features=["res5", "linear"])
    blobs = {}
    g = torch.Generator().manual_seed(3)
    for name, t in src.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            continue  # Caffe2 stores BN as an affine only
        value = torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0)
        blobs[_to_c2_name(name)] = value.numpy().astype(np.float32)
        if name.endswith("norm.weight"):
            blobs[_to_c2_name(name).replace("_bn_s", "_bn_s_momentum")] = np.zeros(t.shape, np.float32)
    assert "res2_0_branch2a_w" in blobs and "res5_2_branch2c_bn_b" in blobs and "res2_0_branch1_w" in blobs
    path = tmp_path / "R-tiny.pkl"
    payload = {"blobs": blobs} if layout == "blobs" else blobs
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    loaded = load_c2_pkl(path)
    assert set(loaded) == set(blobs)
    state = convert_c2_resnet(loaded)
    model = ResNet(
        build_resnet_backbone(cfg).stem,
        [list(s) for s in build_resnet_backbone(cfg).stages],
        num_classes=5,
        out_features=["res5", "linear"],
    )
    model.load_state_dict(state, strict=True)
    for name, value in model.state_dict().items():
        if name.endswith("running_mean"):
            assert torch.count_nonzero(value) == 0
        elif name.endswith("running_var"):
            assert torch.all(value == 1)
        else:
            np.testing.assert_array_equal(value.numpy(), blobs[_to_c2_name(name)])
    # numerically: x * s / sqrt(1 + eps) + b for each norm (checked on the stem)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, torch.from_numpy(blobs["conv1_w"]), None, 2, 3)
        s, b = torch.from_numpy(blobs["res_conv1_bn_s"]), torch.from_numpy(blobs["res_conv1_bn_b"])
        ref = y * (s / (1 + 1e-5) ** 0.5)[None, :, None, None] + b[None, :, None, None]
        torch.testing.assert_close(model.stem.conv1(x), ref, atol=1e-5, rtol=1e-5)


def test_c2_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="'foo_w'"):
        convert_c2_resnet({"foo_w": np.zeros(1, np.float32)})

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": Evil()}}, f)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_c2_pkl(path)
    path = tmp_path / "list.pkl"
    with open(path, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError, match="dict"):
        load_c2_pkl(path)


def test_load_c2_pkl_reads_detectron2_model_zoo_pickle(reference_dir):
    root = reference_dir / "golden" / "mask_rcnn_tiny"
    blobs = load_c2_pkl(root / "model.pkl")  # {"model": {name: ndarray}, "__author__": ...}
    weights = torch.load(root / "model.pth", map_location="cpu", weights_only=True)
    assert set(blobs) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(blobs[name], value.numpy())
