"""optimize_for_inference: golden detectron2 outputs of the optimised tiny Mask R-CNN, equality with the
unoptimised model on random R-50 models (norm statistics randomised so folding is not trivial), norms that
cannot be folded, checkpoint loading into an optimised model, and refusal of training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from detcore.archs import (
    build_model,
    fold_checkpoint_state,
    get_config,
    is_optimized_for_inference,
    load_checkpoint,
    optimize_for_inference,
)
from detcore.ops import FrozenBatchNorm2d
from detcore.structures import Boxes, Instances

IMAGES = ["00000", "00001", "00002", "00003", "00004", "00005", "blank_noise", "blank_flat"]


@pytest.fixture(scope="module")
def optimized_golden(golden_dir, tiny_overrides):
    """The golden tiny model, optimised *before* its (original, unfolded) checkpoint is loaded."""
    m = build_model(get_config("mask_rcnn_R_50_FPN", tiny_overrides)).eval()
    optimize_for_inference(m)
    report = load_checkpoint(m, golden_dir / "model.pth", strict=True)
    assert report.ok
    return m


def _golden_input(golden_dir, name):
    d = np.load(golden_dir / f"{name}.npz")
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    height, width = (int(v) for v in d["original_size"])
    return d, {"image": image, "height": height, "width": width}


@pytest.mark.parametrize("name", IMAGES)
def test_optimized_golden_image(optimized_golden, golden_dir, name):
    """Same checks and tolerances as test_golden.py, on the optimised model."""
    d, inp = _golden_input(golden_dir, name)
    captured = {}
    hook = optimized_golden.backbone.register_forward_hook(lambda m, i, o: captured.update(features=o))
    try:
        with torch.no_grad():
            out = optimized_golden([inp])
    finally:
        hook.remove()
    for level in ("p2", "p3", "p4", "p5", "p6"):
        key = f"features/{level}"
        if key in d:
            torch.testing.assert_close(
                captured["features"][level][0], torch.as_tensor(d[key]), atol=2e-3, rtol=0
            )
    inst = out[0]["instances"]
    boxes = torch.as_tensor(d["final/pred_boxes"])
    assert len(inst) == len(boxes)
    torch.testing.assert_close(inst.pred_boxes.tensor, boxes, atol=1e-2, rtol=0)
    torch.testing.assert_close(inst.scores, torch.as_tensor(d["final/scores"]), atol=1e-4, rtol=0)
    assert torch.equal(inst.pred_classes, torch.as_tensor(d["final/pred_classes"]))
    masks = torch.as_tensor(d["final/pred_masks"])
    assert inst.pred_masks.shape == masks.shape
    if masks.numel():
        assert (inst.pred_masks.to(torch.uint8) != masks).float().mean().item() <= 1e-4


def test_optimized_golden_raw_mask_probs(optimized_golden, golden_dir):
    d = np.load(golden_dir / "00004.npz")
    image = torch.as_tensor(d["input_bgr_resized"].transpose(2, 0, 1).astype("float32"))
    with torch.no_grad():
        raw = optimized_golden.inference([{"image": image}], do_postprocess=False)[0]
    torch.testing.assert_close(raw.pred_masks, torch.as_tensor(d["raw/mask_probs"]), atol=2e-3, rtol=0)


def test_optimized_structure(optimized_golden):
    model = optimized_golden
    assert is_optimized_for_inference(model)
    assert not any(isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) for m in model.modules())
    assert not any(k.split(".")[-2] == "norm" for k in model.state_dict())
    assert model.backbone.bottom_up.res2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(not p.requires_grad for p in model.parameters())
    assert optimize_for_inference(model) is model  # twice: no-op


def _randomize_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial statistics and affine parameters for every (Frozen)BatchNorm, keeping activations sane."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.1)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def _rel_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-3) -> None:
    assert a.shape == b.shape
    scale = a.abs().max().clamp_min(1e-12)
    err = (a.double() - b.double()).abs().max() / scale
    assert err.item() <= rel, f"relative error {err.item():.2e} > {rel}"


def _image(seed: int, h: int = 128, w: int = 192) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _pair(name: str, overrides: list[str], seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(get_config(name, overrides)).eval()
    _randomize_norms(model, seed)
    return model, optimize_for_inference(copy.deepcopy(model))


def _features(model, image):
    images = model.preprocess_image([{"image": image}])
    return images, model.backbone(images.tensor)


@torch.no_grad()
def test_r50_mask_rcnn_equals_unoptimized():
    plain, opt = _pair("mask_rcnn_R_50_FPN", [])
    image = _image(1)
    images, f_plain = _features(plain, image)
    _, f_opt = _features(opt, image)
    assert list(f_plain) == list(f_opt)
    for k in f_plain:
        assert f_opt[k].is_contiguous(memory_format=torch.channels_last)
        _rel_close(f_plain[k], f_opt[k])
    # RPN head
    levels = [f_plain[k] for k in plain.proposal_generator.in_features]
    for a, b in zip(plain.proposal_generator.rpn_head(levels), opt.proposal_generator.rpn_head(levels)):
        for x, y in zip(a, b):
            _rel_close(x, y)
    # box and mask branches on the same boxes and features
    boxes = torch.tensor([[10.0, 20.0, 120.0, 110.0], [0.0, 0.0, 192.0, 128.0], [60.0, 40.0, 90.0, 100.0]])
    feats = [f_plain[k] for k in plain.roi_heads.box_in_features]
    pooled = plain.roi_heads.box_pooler(feats, [Boxes(boxes)])
    for a, b in zip(
        plain.roi_heads.box_predictor(plain.roi_heads.box_head(pooled)),
        opt.roi_heads.box_predictor(opt.roi_heads.box_head(pooled)),
    ):
        _rel_close(a, b)
    inst = Instances(images.image_sizes[0], pred_boxes=Boxes(boxes), pred_classes=torch.tensor([0, 5, 79]))
    m_plain = plain.roi_heads.forward_with_given_boxes(f_plain, [inst[:]])[0].pred_masks
    m_opt = opt.roi_heads.forward_with_given_boxes(f_plain, [inst[:]])[0].pred_masks
    _rel_close(m_plain, m_opt)
    # whole model: same number of detections, matched boxes/scores (random weights: compare as sets)
    out_plain = plain([{"image": image}])[0]["instances"]
    out_opt = opt([{"image": image}])[0]["instances"]
    assert len(out_plain) == len(out_opt)
    if len(out_plain):
        d = torch.cdist(out_plain.pred_boxes.tensor.double(), out_opt.pred_boxes.tensor.double(), p=1)
        assert d.min(dim=1).values.max().item() <= 0.5
        torch.testing.assert_close(
            out_plain.scores.sort().values, out_opt.scores.sort().values, atol=1e-4, rtol=0
        )


@torch.no_grad()
def test_r50_retinanet_equals_unoptimized():
    plain, opt = _pair("retinanet_R_50_FPN", [], seed=1)
    image = _image(2)
    _, f_plain = _features(plain, image)
    _, f_opt = _features(opt, image)
    for k in f_plain:
        _rel_close(f_plain[k], f_opt[k])
    levels = [f_plain[k] for k in plain.head_in_features]
    # RetinaNet's subnets: Conv2d + ReLU pairs in nn.Sequential, fused (the ReLU slots become Identity)
    assert sum(isinstance(m, nn.Identity) for m in opt.head.cls_subnet) == 4
    for a, b in zip(plain.head(levels), opt.head(levels)):
        for x, y in zip(a, b):
            _rel_close(x, y)


@torch.no_grad()
def test_batchnorm_folded_and_groupnorm_kept(tiny_overrides):
    """Eval-mode BatchNorm (backbone, FPN) is folded; GroupNorm (mask head) cannot be and stays."""
    overrides = [
        *tiny_overrides,
        "model.backbone.resnet.norm=BN",
        "model.backbone.fpn.norm=BN",
        "model.roi_heads.mask_head.norm=GN",
    ]
    plain, opt = _pair("mask_rcnn_R_50_FPN", overrides, seed=3)
    assert isinstance(plain.backbone.fpn_lateral2.norm, nn.BatchNorm2d)
    assert opt.backbone.fpn_lateral2.norm is None
    assert opt.backbone.bottom_up.res2[0].conv1.norm is None
    assert isinstance(opt.roi_heads.mask_head.mask_fcn1.norm, nn.GroupNorm)
    image = _image(4, 160, 224)
    _, f_plain = _features(plain, image)
    _, f_opt = _features(opt, image)
    for k in f_plain:
        _rel_close(f_plain[k], f_opt[k])
    boxes = Boxes(torch.tensor([[10.0, 20.0, 120.0, 150.0], [30.0, 5.0, 200.0, 100.0]]))
    inst = Instances((160, 224), pred_boxes=boxes, pred_classes=torch.tensor([0, 2]))
    _rel_close(
        plain.roi_heads.forward_with_given_boxes(f_plain, [inst[:]])[0].pred_masks,
        opt.roi_heads.forward_with_given_boxes(f_plain, [inst[:]])[0].pred_masks,
    )


@torch.no_grad()
def test_original_state_dict_loads_into_optimized_model(tiny_overrides):
    plain, opt = _pair("mask_rcnn_R_50_FPN", tiny_overrides, seed=5)
    original = plain.state_dict()
    # another optimised model (different weights) takes the original keys and becomes equal to `opt`
    torch.manual_seed(123)
    other = optimize_for_inference(build_model(get_config("mask_rcnn_R_50_FPN", tiny_overrides)).eval())
    result = other.load_state_dict(original, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, a), b in zip(opt.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # its own (folded) state dict loads too, and fold_checkpoint_state maps original -> folded
    assert other.load_state_dict(opt.state_dict(), strict=True).missing_keys == []
    folded = fold_checkpoint_state(opt, original)
    assert set(folded) == set(opt.state_dict())
    torch.testing.assert_close(folded, dict(opt.state_dict()), rtol=0, atol=0)
    assert "backbone.bottom_up.stem.conv1.norm.running_var" in original  # not modified


def test_training_refused(tiny_overrides):
    model = build_model(get_config("mask_rcnn_R_50_FPN", tiny_overrides))
    with pytest.raises(ValueError, match="eval mode"):
        optimize_for_inference(model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        optimize_for_inference("model")
    assert not is_optimized_for_inference(model)
    opt = optimize_for_inference(model.eval())
    with pytest.raises(RuntimeError, match="optimize_for_inference"):
        opt.train()
    with pytest.raises(RuntimeError, match="optimize_for_inference"):
        opt.backbone.bottom_up.res2[0].train()
    with pytest.raises(RuntimeError, match="optimize_for_inference"):
        opt.backbone.fpn_output2.train(True)
    assert opt.eval() is opt and not opt.training
    assert opt.train(False) is opt


def test_grad_mode_falls_back(tiny_overrides):
    """With autograd on and an input requiring grad, the unfused path runs (same values, grads flow)."""
    _, opt = _pair("mask_rcnn_R_50_FPN", tiny_overrides, seed=6)
    conv = opt.backbone.bottom_up.res2[0].conv1
    x = torch.randn(1, conv.in_channels, 16, 20, requires_grad=True)
    y = conv(x)
    with torch.no_grad():
        expected = conv(x.detach())
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert (y >= 0).all()
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@torch.no_grad()
def test_cpu_uses_fused_onednn_convolutions(tiny_overrides):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN (the fused path is CPU/oneDNN only)")
    _, opt = _pair("mask_rcnn_R_50_FPN", tiny_overrides, seed=7)
    block = opt.backbone.bottom_up.res3[1]
    x = torch.rand(1, block.conv1.in_channels, 24, 32).contiguous(memory_format=torch.channels_last)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = block(x)
    names = [e.key for e in prof.key_averages()]
    assert "mkldnn::_convolution_pointwise" in names
    assert not any(n in names for n in ("aten::relu_", "aten::add_", "aten::batch_norm"))
    # the block's value, computed by hand from its folded convs
    f = torch.nn.functional
    c1, c2, c3 = block.conv1, block.conv2, block.conv3
    out = f.relu(f.conv2d(x, c1.weight, c1.bias, c1.stride, c1.padding))
    out = f.relu(f.conv2d(out, c2.weight, c2.bias, c2.stride, c2.padding))
    expected = f.relu(f.conv2d(out, c3.weight, c3.bias) + x)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


def _winograd_convs(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "_winograd", False)]


@torch.no_grad()
def test_winograd_runs_on_wide_3x3_convs_and_matches_direct():
    """R-50 RetinaNet: every 3x3 / stride-1 conv with >= 128 channels runs Winograd F(4x4, 3x3) on large enough
    maps (res3-res5 conv2, FPN outputs, the head subnets), the rest stays oneDNN, and outputs equal the
    direct-convolution optimisation's within the transform's rounding."""
    plain, opt = _pair("retinanet_R_50_FPN", [], seed=8)
    direct = optimize_for_inference(copy.deepcopy(plain), winograd=False)
    assert _winograd_convs(direct) == []
    names = set(_winograd_convs(opt))
    expected = {
        name
        for name, m in plain.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == (3, 3)
        and m.stride == (1, 1)
        and m.in_channels >= 128
        and m.out_channels >= 128
    }
    assert names == expected
    assert "backbone.fpn_output3" in names and "head.cls_subnet.0" in names
    assert "backbone.bottom_up.res2.0.conv2" not in names  # 64 channels
    assert "head.cls_score" in names  # 256 -> 80 * 9 anchors
    assert "head.bbox_pred" not in names  # 256 -> 4 * 9
    image = _image(9, 320, 416)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out_opt = opt([{"image": image}])[0]["instances"]
    calls = {e.key: e.count for e in prof.key_averages()}
    # maps of >= 24 4x4 tiles: res3 (40x52, 4 blocks), res4 (20x26, 6 blocks), FPN outputs P3, P4, and the 4 + 4
    # subnet convs + cls_score on P3 and P4; res5 (10x13: 12 tiles) and P5-P7 stay on oneDNN
    assert calls.get("detcore::conv3x3_winograd", 0) == 4 + 6 + 2 + 2 * 9
    out_direct = direct([{"image": image}])[0]["instances"]
    _, f_opt = _features(opt, image)
    _, f_direct = _features(direct, image)
    for k in f_opt:
        _rel_close(f_direct[k], f_opt[k], rel=1e-4)
    levels = [f_direct[k] for k in plain.head_in_features]
    for a, b in zip(direct.head(levels), opt.head(levels)):
        for x, y in zip(a, b):
            _rel_close(x, y, rel=1e-4)
    assert len(out_opt) == len(out_direct)
    torch.testing.assert_close(out_opt.scores, out_direct.scores, atol=1e-4, rtol=0)


@torch.no_grad()
def test_winograd_weights_follow_checkpoint_loading():
    """The cached transformed weights are rebuilt when load_state_dict changes the conv's weight."""
    conv_name = "backbone.fpn_output2"
    a, opt = _pair("faster_rcnn_R_50_FPN", [], seed=10)
    b, _ = _pair("faster_rcnn_R_50_FPN", [], seed=11)
    conv = opt.get_submodule(conv_name)
    assert conv._winograd
    x = torch.randn(1, conv.in_channels, 24, 28)
    before = conv(x)
    torch.testing.assert_close(before, a.get_submodule(conv_name)(x), rtol=1e-4, atol=1e-4)
    opt.load_state_dict(b.state_dict())  # original (unfolded) keys of another model
    torch.testing.assert_close(conv(x), b.get_submodule(conv_name)(x), rtol=1e-4, atol=1e-4)
