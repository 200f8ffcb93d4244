from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from detcore.heads import SemSegFPNHead, SemSegFPNHeadConfig, build_component
from detcore.ops import ShapeSpec


def _fpn_shapes(channels: int, levels=range(2, 7)) -> dict[str, ShapeSpec]:
    return {f"p{i}": ShapeSpec(channels=channels, stride=2**i) for i in levels}


def test_state_dict_matches_detectron2(reference_dir):
    head = build_component("sem_seg_head", "SemSegFPNHead", None, _fpn_shapes(256))
    ours = {k: list(v.shape) for k, v in head.state_dict().items()}
    expected = {}
    for line in (reference_dir / "detectron2-state-dicts" / "semantic_R_50_FPN.txt").read_text().splitlines():
        if line.startswith("sem_seg_head."):
            name, shape, _ = line.split("\t")
            expected[name[len("sem_seg_head.") :]] = [int(s) for s in shape.strip("[]").split(",")]
    assert len(expected) == 23
    assert ours == expected
    assert head.in_features == ["p2", "p3", "p4", "p5"]  # p6 is not in the default in_features


def test_config_defaults():
    cfg = SemSegFPNHeadConfig()
    assert cfg.in_features == ("p2", "p3", "p4", "p5")
    assert (
        cfg.ignore_value,
        cfg.num_classes,
        cfg.conv_dims,
        cfg.common_stride,
        cfg.norm,
        cfg.loss_weight,
    ) == (
        255,
        54,
        128,
        4,
        "GN",
        1.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3
    with pytest.raises(ValueError, match="in_features"):
        SemSegFPNHead.from_config(cfg, _fpn_shapes(8, range(3, 6)))


def _small_head(norm="GN", loss_weight=1.0) -> SemSegFPNHead:
    return SemSegFPNHead(
        _fpn_shapes(32, range(2, 5)),
        num_classes=5,
        conv_dims=32,
        common_stride=4,
        norm=norm,
        loss_weight=loss_weight,
        ignore_value=255,
    )


def _features(n=2, h=8, w=12):
    torch.manual_seed(0)
    return {f"p{i}": torch.randn(n, 32, h // 2 ** (i - 2), w // 2 ** (i - 2)) for i in range(2, 5)}


def test_eval_output_shape_and_structure():
    head = _small_head().eval()
    logits, losses = head(_features())
    assert losses == {}
    assert logits.shape == (2, 5, 32, 48)
    # p4 (stride 16) has two conv + upsample blocks, p2 one conv and no upsampling
    assert len(head.p4) == 4 and len(head.p2) == 1
    # eval output = bilinear x4 of layers()
    expected = F.interpolate(head.layers(_features()), scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.allclose(logits, expected)
    # no norm: convs have a bias
    head_nonorm = _small_head(norm="")
    assert head_nonorm.p2[0].bias is not None and head.p2[0].bias is None


def test_training_loss_vs_cross_entropy():
    head = _small_head(loss_weight=0.5).train()
    feats = _features()
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 5, (2, 32, 48), generator=g)
    targets[0, :5] = 255
    targets[1, :, :3] = 255
    out, losses = head(feats, targets)
    assert out is None and set(losses) == {"loss_sem_seg"}

    logits = F.interpolate(head.layers(feats).double(), scale_factor=4, mode="bilinear", align_corners=False)
    direct = F.cross_entropy(logits, targets, ignore_index=255)
    # the same by hand: mean over non-ignored pixels of -log softmax at the target
    logp = torch.log_softmax(logits, dim=1)
    valid = targets != 255
    manual = -logp.permute(0, 2, 3, 1)[valid].gather(1, targets[valid][:, None]).mean()
    assert direct.item() == pytest.approx(manual.item(), rel=1e-10)
    assert losses["loss_sem_seg"].item() == pytest.approx(0.5 * direct.item(), rel=1e-5)

    losses["loss_sem_seg"].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


def test_bad_inputs():
    head = _small_head().train()
    with pytest.raises(ValueError, match="targets"):
        head(_features())
    with pytest.raises(ValueError, match="targets"):
        head(_features(), torch.zeros(2, 16, 12, dtype=torch.int64))
    with pytest.raises(ValueError, match="features"):
        head({"p2": torch.zeros(1, 32, 8, 8)})
    with pytest.raises(ValueError, match="common_stride"):
        SemSegFPNHead(_fpn_shapes(32, range(2, 4)), num_classes=2, conv_dims=32, common_stride=8)
