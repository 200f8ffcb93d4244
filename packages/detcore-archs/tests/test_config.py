"""Typed config: named configs, YAML round trip, _base_ inheritance, overrides, error messages."""

from __future__ import annotations

import dataclasses

import pytest

from detcore.archs import (
    Config,
    InputConfig,
    ModelConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    get_config,
    list_configs,
    load_config,
)
from detcore.backbones import ResNetConfig, ResNetFPNConfig
from detcore.heads import RPNConfig, StandardRPNHeadConfig
from detcore.heads.roi_heads import Res5ROIHeadsConfig, StandardROIHeadsConfig


def test_defaults_are_detectron2s():
    cfg = Config()
    m = cfg.model
    assert m.meta_architecture == "GeneralizedRCNN"
    assert m.backbone_name == "resnet" and m.backbone == ResNetConfig()
    assert m.proposal_generator_name == "RPN" and m.proposal_generator == RPNConfig()
    assert m.roi_heads_name == "Res5ROIHeads" and m.roi_heads == Res5ROIHeadsConfig()
    assert m.pixel_mean == (103.53, 116.28, 123.675)
    assert m.pixel_std == (1.0, 1.0, 1.0)
    assert m.input_format == "BGR"
    assert cfg.input == InputConfig(
        min_size_train=(800,), max_size_train=1333, min_size_test=800, max_size_test=1333
    )
    assert config_from_dict({}) == cfg


def test_frozen():
    cfg = get_config("faster_rcnn_R_50_FPN")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.input_format = "RGB"  # type: ignore[misc]


def test_named_configs_match_component_presets():
    cfg = get_config("mask_rcnn_R_50_FPN")
    assert cfg.model.backbone == ResNetFPNConfig.base_rcnn_fpn()
    assert cfg.model.proposal_generator == RPNConfig.base_rcnn_fpn()
    assert cfg.model.roi_heads == StandardROIHeadsConfig.base_rcnn_fpn(mask_on=True)
    assert cfg.input.min_size_train == (640, 672, 704, 736, 768, 800)
    faster = get_config("faster_rcnn_R_50_FPN")
    assert faster.model.roi_heads == StandardROIHeadsConfig.base_rcnn_fpn(mask_on=False)
    assert get_config("faster_rcnn_R_50_FPN_1x") == faster == get_config("faster_rcnn_R_50_FPN_3x")
    rpn = get_config("rpn_R_50_FPN")
    assert rpn.model.meta_architecture == "ProposalNetwork"
    assert rpn.model.proposal_generator.post_nms_topk_test == 2000
    c4 = get_config("faster_rcnn_R_50_C4")
    assert c4.model.proposal_generator.pre_nms_topk_test == 6000
    assert c4.model.roi_heads_name == "Res5ROIHeads"
    for name in ("mask_rcnn_R_50_FPN", "faster_rcnn_R_50_FPN_1x", "faster_rcnn_R_50_FPN_3x", "rpn_R_50_FPN"):
        assert name in list_configs()
    assert not any(n.startswith("Base-") for n in list_configs())


def test_unknown_named_config():
    with pytest.raises(ValueError, match=r"no config named 'mask_rcnn'.*mask_rcnn_R_50_FPN"):
        get_config("mask_rcnn")


@pytest.mark.parametrize("name", ["mask_rcnn_R_50_FPN", "keypoint_rcnn_R_50_FPN", "faster_rcnn_R_50_C4"])
def test_yaml_round_trip(tmp_path, name):
    cfg = get_config(name)
    text = dump_config(cfg)
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    again = load_config(p)
    assert again == cfg
    p.write_text(dump_config(again))
    assert dump_config(load_config(p)) == dump_config(again)  # a fixed point after one load
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_inheritance_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "model:\n  pixel_std: [57.375, 57.12, 58.395]\n  roi_heads:\n    num_classes: 5\n    mask_on: true\n"
        "input:\n  min_size_test: 600\n"
    )
    (tmp_path / "sub" / "mid.yaml").write_text(
        "_base_: ../base.yaml\nmodel:\n  roi_heads:\n    num_classes: 7\n"
    )
    (tmp_path / "sub" / "child.yaml").write_text("_base_: mid.yaml\ninput:\n  max_size_test: 1000\n")
    cfg = load_config(tmp_path / "sub" / "child.yaml")
    assert cfg.model.pixel_std == (57.375, 57.12, 58.395)
    assert cfg.model.roi_heads.num_classes == 7  # child wins
    assert cfg.model.roi_heads.mask_on is True  # merged key by key, not replaced
    assert cfg.input.min_size_test == 600 and cfg.input.max_size_test == 1000


def test_base_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: nope.yaml\n")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "c.yaml")


def test_overrides():
    cfg = get_config(
        "mask_rcnn_R_50_FPN",
        [
            "model.roi_heads.num_classes=3",
            "model.pixel_mean=[1, 2, 3]",
            "model.backbone.resnet.depth=101",
            "input.min_size_train=[512, 544]",
            "model.proposal_generator.anchor_generator.sizes=[[16], [32], [64], [128], [256]]",
            "model.input_format=RGB",
            "model.proposal_generator.nms_thresh=0.6",
        ],
    )
    assert cfg.model.roi_heads.num_classes == 3
    assert cfg.model.pixel_mean == (1.0, 2.0, 3.0)
    assert cfg.model.backbone.resnet.depth == 101
    assert cfg.model.backbone.fpn.in_features == ["res2", "res3", "res4", "res5"]  # siblings kept
    assert cfg.input.min_size_train == (512, 544)
    assert cfg.model.proposal_generator.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert cfg.model.input_format == "RGB"
    assert cfg.model.proposal_generator.nms_thresh == 0.6
    # later overrides win
    cfg = get_config(
        "faster_rcnn_R_50_FPN", ["model.roi_heads.num_classes=3", "model.roi_heads.num_classes=4"]
    )
    assert cfg.model.roi_heads.num_classes == 4


def test_override_changing_component_name_switches_config_class():
    cfg = get_config("mask_rcnn_R_50_FPN", ["model.backbone_name=resnet", "model.backbone={depth: 18}"])
    assert cfg.model.backbone == ResNetConfig(depth=18)
    # the base's resnet/fpn settings belonged to resnet_fpn: dropped when the name changes
    assert get_config("mask_rcnn_R_50_FPN", ["model.backbone_name=resnet"]).model.backbone == ResNetConfig()
    cfg = get_config("faster_rcnn_R_50_FPN", ["model.proposal_generator_name=PrecomputedProposals"])
    assert cfg.model.proposal_generator is None


def test_nested_component_config_class_from_registry():
    cfg = get_config("faster_rcnn_R_50_FPN", ["model.proposal_generator.head.conv_dims=[128, 128]"])
    assert cfg.model.proposal_generator.head == StandardRPNHeadConfig(conv_dims=(128, 128))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("model.roi_heads.num_clases=3", r"'model\.roi_heads\.num_clases'.*valid keys:.*num_classes"),
        ("model.backbone.resnet.depht=50", r"'model\.backbone\.resnet\.depht'.*valid keys:.*depth"),
        ("modle.x=1", r"'modle'.*valid keys: input, model"),
        ("model.proposal_generator.anchor_generator.sise=1", r"anchor_generator\.sise"),
    ],
)
def test_unknown_keys(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_config("mask_rcnn_R_50_FPN", [override])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("model.roi_heads.num_classes=three", r"model\.roi_heads\.num_classes: expected an int, got str"),
        ("model.roi_heads.num_classes=3.5", r"model\.roi_heads\.num_classes: expected an int"),
        ("model.roi_heads.mask_on=1", r"model\.roi_heads\.mask_on: expected a bool"),
        ("model.pixel_mean=1", r"model\.pixel_mean: expected a list"),
        ("model.pixel_mean=[a, b, c]", r"model\.pixel_mean\[0\]: expected a float"),
        (
            "model.backbone.resnet.out_features=res4",
            r"model\.backbone\.resnet\.out_features: expected a list",
        ),
        ("model.roi_heads=5", r"model\.roi_heads: expected a mapping"),
        ("model.input_format=RBG", r"input_format must be 'BGR' or 'RGB'"),
        ("model.backbone_name=resnett", r"model\.backbone_name.*resnett.*resnet_fpn"),
    ],
)
def test_wrong_types(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_config("mask_rcnn_R_50_FPN", [override])


def test_malformed_overrides():
    with pytest.raises(ValueError, match="dotted.key=value"):
        get_config("mask_rcnn_R_50_FPN", ["model.roi_heads.num_classes"])
    with pytest.raises(ValueError, match="dotted path"):
        get_config("mask_rcnn_R_50_FPN", ["model..x=1"])
    with pytest.raises(TypeError, match="list of 'key=value'"):
        get_config("mask_rcnn_R_50_FPN", "model.roi_heads.num_classes=3")


def test_file_must_hold_mapping(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(p)


def test_model_config_type():
    assert isinstance(get_config("rpn_R_50_FPN").model, ModelConfig)


def test_every_named_config_loads_and_round_trips(tmp_path):
    for name in list_configs():
        cfg = get_config(name)
        p = tmp_path / f"{name}.yaml"
        p.write_text(dump_config(cfg))
        assert load_config(p) == cfg, name


def test_precomputed_proposals_round_trip(tmp_path):
    cfg = get_config("faster_rcnn_R_50_FPN", ["model.proposal_generator_name=PrecomputedProposals"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert "proposal_generator: null" in p.read_text()
    assert load_config(p) == cfg
    with pytest.raises(ValueError, match="takes no config"):
        get_config(
            "faster_rcnn_R_50_FPN",
            [
                "model.proposal_generator_name=PrecomputedProposals",
                "model.proposal_generator={nms_thresh: 0.5}",
            ],
        )
