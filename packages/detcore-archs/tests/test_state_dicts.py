"""Models built from the named configs have exactly detectron2's state-dict keys, shapes and dtypes
(``reference/detectron2-state-dicts``), so detectron2 checkpoints load unchanged."""

from __future__ import annotations

import pytest
import torch

from detcore.archs import build_model, get_config, load_checkpoint

# reference file -> named config that builds that architecture
ARCHITECTURES = [
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
    "cascade_mask_rcnn_R_50_FPN",
    "semantic_R_50_FPN",
    "panoptic_fpn_R_50",
]


def _read_reference(path):
    expected = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        expected[key] = (tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), dtype)
    return expected


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_state_dict_matches_detectron2(reference_dir, name):
    path = reference_dir / "detectron2-state-dicts" / f"{name}.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    expected = _read_reference(path)
    model = build_model(get_config(name), device="meta")  # names, shapes and dtypes only: no init cost
    assert next(model.parameters()).is_meta
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert list(got) == list(expected)  # same order too, as detectron2 registers the modules


def test_every_reference_file_is_covered(reference_dir):
    """Every reference architecture (13 files) is checked from a named config."""
    names = {p.stem for p in (reference_dir / "detectron2-state-dicts").glob("*.txt")}
    assert len(names) == 13
    assert names == set(ARCHITECTURES)


def test_meta_model_refuses_loading(tmp_path):
    model = build_model(get_config("rpn_R_50_FPN"), device="meta")
    cpu = build_model(get_config("rpn_R_50_FPN"))
    torch.save(cpu.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match="meta device"):
        load_checkpoint(model, tmp_path / "w.pth")


def test_meta_arch_types():
    assert type(build_model(get_config("rpn_R_50_FPN"))).__name__ == "ProposalNetwork"
    model = build_model(get_config("mask_rcnn_R_50_FPN"))
    assert type(model).__name__ == "GeneralizedRCNN"
    assert model.device == torch.device("cpu")
    assert model.backbone.size_divisibility == 32


@pytest.mark.parametrize(
    "name, meta_arch, roi_heads, proposal_generator",
    [
        ("cascade_mask_rcnn_R_50_FPN", "GeneralizedRCNN", "CascadeROIHeads", "RPN"),
        ("semantic_R_50_FPN", "SemanticSegmentor", None, None),
        ("panoptic_fpn_R_50", "PanopticFPN", "StandardROIHeads", "RPN"),
        ("fcos_R_50_FPN", "FCOS", None, None),
        ("faster_rcnn_R_101_FPN", "GeneralizedRCNN", "StandardROIHeads", "RPN"),
        ("rotated_faster_rcnn_R_50_FPN", "GeneralizedRCNN", "RROIHeads", "RRPN"),
    ],
)
def test_new_named_configs_build_their_components(name, meta_arch, roi_heads, proposal_generator):
    model = build_model(get_config(name), device="meta")
    assert type(model).__name__ == meta_arch
    if roi_heads is not None:
        assert type(model.roi_heads).__name__ == roi_heads
        assert type(model.proposal_generator).__name__ == proposal_generator
    if name == "faster_rcnn_R_101_FPN":  # ResNet-101: 23 blocks in res4
        assert len(model.backbone.bottom_up.res4) == 23
    if name == "cascade_mask_rcnn_R_50_FPN":
        assert len(model.roi_heads.box_head) == 3 and model.roi_heads.mask_on
    if name == "panoptic_fpn_R_50":
        assert type(model.sem_seg_head).__name__ == "SemSegFPNHead"
        assert model.roi_heads.mask_on
        assert get_config(name).model.sem_seg_head.loss_weight == 0.5
    if name == "fcos_R_50_FPN":
        assert type(model.head).__name__ == "FCOSHead"
        assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
        # detectron2's FCOS computes P6 from P5 (256 channels), RetinaNet from res5 (2048): same names
        sd = model.state_dict()
        retina = build_model(get_config("retinanet_R_50_FPN"), device="meta").state_dict()
        assert tuple(sd["backbone.top_block.p6.weight"].shape) == (256, 256, 3, 3)
        assert tuple(retina["backbone.top_block.p6.weight"].shape) == (256, 2048, 3, 3)
        backbone = [k for k in sd if k.startswith("backbone.")]
        assert backbone == [k for k in retina if k.startswith("backbone.")]
        assert all(sd[k].shape == retina[k].shape for k in backbone if k != "backbone.top_block.p6.weight")
