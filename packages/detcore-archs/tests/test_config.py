"""Typed config: named configs, YAML round trip, _base_ inheritance, overrides, error messages."""

from __future__ import annotations

import dataclasses

import pytest

from detcore.archs import (
    AMPConfig,
    ClipGradientsConfig,
    Config,
    DataLoaderConfig,
    DatasetsConfig,
    InputConfig,
    ModelConfig,
    SolverConfig,
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
    assert get_config("faster_rcnn_R_50_FPN_1x") == faster
    # 1x and 3x differ only in the solver schedule
    three = get_config("faster_rcnn_R_50_FPN_3x")
    assert dataclasses.replace(three, solver=faster.solver) == faster
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
        ("modle.x=1", r"'modle'.*valid keys: dataloader, datasets, input, model, solver"),
        ("solver.base_rl=0.1", r"'solver\.base_rl'.*valid keys:.*base_lr"),
        ("solver.clip_gradients.enable=true", r"'solver\.clip_gradients\.enable'.*valid keys:.*enabled"),
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
        ("solver.max_iter=1e3", r"solver\.max_iter: expected an int"),
        ("solver.steps=1000", r"solver\.steps: expected a list"),
        ("solver.steps=[20, 10]", r"steps must be increasing"),
        ("solver.base_lr=0", r"base_lr must be > 0"),
        ("solver.optimizer=Adam", r"optimizer must be 'SGD' or 'AdamW'"),
        (
            "solver.lr_scheduler_name=StepLR",
            r"lr_scheduler_name must be one of WarmupMultiStepLR, WarmupCosineLR",
        ),
        ("solver.warmup_method=exp", r"warmup_method must be 'linear' or 'constant'"),
        ("solver.clip_gradients.clip_type=l2", r"clip_type must be 'value', 'norm' or 'full_model'"),
        ("solver.amp.precision=fp8", r"precision must be 'fp16' or 'bf16'"),
        ("dataloader.sampler_train=Random", r"sampler_train must be"),
        ("datasets.train=coco", r"datasets\.train: expected a list"),
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


def test_solver_dataloader_datasets_defaults_are_detectron2s():
    """detectron2's config/defaults.py SOLVER / DATALOADER / DATASETS values."""
    s = Config().solver
    assert s == SolverConfig()
    assert (s.optimizer, s.ims_per_batch, s.base_lr, s.base_lr_end) == ("SGD", 16, 0.001, 0.0)
    assert (s.momentum, s.nesterov, s.weight_decay, s.weight_decay_norm) == (0.9, False, 1e-4, 0.0)
    assert (s.weight_decay_bias, s.bias_lr_factor) == (None, 1.0)
    assert (s.lr_scheduler_name, s.gamma, s.steps, s.max_iter) == ("WarmupMultiStepLR", 0.1, (30000,), 40000)
    assert (s.warmup_factor, s.warmup_iters, s.warmup_method) == (0.001, 1000, "linear")
    assert s.checkpoint_period == 5000
    assert s.clip_gradients == ClipGradientsConfig(
        enabled=False, clip_type="value", clip_value=1.0, norm_type=2.0
    )
    assert s.amp == AMPConfig(enabled=False)
    assert Config().dataloader == DataLoaderConfig(
        num_workers=4,
        aspect_ratio_grouping=True,
        filter_empty_annotations=True,
        sampler_train="TrainingSampler",
        repeat_threshold=0.0,
    )
    assert Config().datasets == DatasetsConfig(train=(), test=())


# (name, base_lr, steps, max_iter, train datasets): detectron2's model-zoo yaml values (FCOS: its LazyConfig)
ZOO_SOLVERS = [
    ("faster_rcnn_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("faster_rcnn_R_50_FPN_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("faster_rcnn_R_50_C4_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("faster_rcnn_R_50_C4_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("faster_rcnn_R_50_DC5_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("faster_rcnn_R_50_DC5_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("faster_rcnn_R_101_FPN_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("faster_rcnn_X_101_32x8d_FPN_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("mask_rcnn_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("mask_rcnn_R_50_FPN_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("mask_rcnn_R_50_C4_3x", 0.02, (210000, 250000), 270000, ("coco_2017_train",)),
    ("mask_rcnn_R_50_FPN_dconv_c3-c5", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("cascade_mask_rcnn_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("retinanet_R_50_FPN_1x", 0.01, (60000, 80000), 90000, ("coco_2017_train",)),
    ("retinanet_R_50_FPN_3x", 0.01, (210000, 250000), 270000, ("coco_2017_train",)),
    ("fcos_R_50_FPN_1x", 0.01, (60000, 80000), 90000, ("coco_2017_train",)),
    ("rpn_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train",)),
    ("keypoint_rcnn_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("keypoints_coco_2017_train",)),
    ("panoptic_fpn_R_50_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train_panoptic_separated",)),
    ("semantic_R_50_FPN_1x", 0.02, (60000, 80000), 90000, ("coco_2017_train_panoptic_stuffonly",)),
]


@pytest.mark.parametrize(("name", "base_lr", "steps", "max_iter", "train"), ZOO_SOLVERS)
def test_named_configs_carry_the_zoo_solver(name, base_lr, steps, max_iter, train):
    cfg = get_config(name)
    s = cfg.solver
    assert (s.ims_per_batch, s.base_lr, s.steps, s.max_iter) == (16, base_lr, steps, max_iter)
    # the rest of the solver is detectron2's defaults
    assert dataclasses.replace(s, base_lr=0.001, steps=(30000,), max_iter=40000) == SolverConfig()
    assert cfg.datasets.train == train
    assert cfg.datasets.test == tuple(t.replace("_train", "_val") for t in train)
    assert cfg.dataloader.filter_empty_annotations is (not name.startswith("panoptic"))


def test_solver_overrides_and_round_trip(tmp_path):
    cfg = get_config(
        "mask_rcnn_R_50_FPN",
        [
            "solver.base_lr=0.0006",
            "solver.steps=[100, 200]",
            "solver.max_iter=300",
            "solver.weight_decay_bias=0.0",
            "solver.optimizer=AdamW",
            "solver.lr_scheduler_name=WarmupCosineLR",
            "solver.clip_gradients={enabled: true, clip_type: full_model, clip_value: 5}",
            "solver.amp.enabled=true",
            "dataloader.num_workers=0",
            "datasets.train=[a, b]",
        ],
    )
    s = cfg.solver
    assert (s.base_lr, s.steps, s.max_iter, s.weight_decay_bias) == (0.0006, (100, 200), 300, 0.0)
    assert s.optimizer == "AdamW" and s.lr_scheduler_name == "WarmupCosineLR"
    assert s.clip_gradients == ClipGradientsConfig(enabled=True, clip_type="full_model", clip_value=5.0)
    assert s.amp.enabled and s.ims_per_batch == 16  # siblings kept
    assert cfg.dataloader.num_workers == 0 and cfg.datasets.train == ("a", "b")
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert "weight_decay_bias: 0.0" in p.read_text()
    assert load_config(p) == cfg
    assert get_config("mask_rcnn_R_50_FPN").solver.weight_decay_bias is None


@pytest.mark.parametrize(
    ("norm", "norm_type"),
    [("FrozenBN", "FrozenBatchNorm2d"), ("BN", "BatchNorm2d"), ("GN", "GroupNorm"), ("", None)],
)
def test_backbone_norm_and_freeze_at_from_config(norm, norm_type):
    """model.backbone.resnet.norm picks the ResNet's normalization; freeze_at=0 leaves every stage trainable
    (a from-scratch run), freeze_at=2 freezes the stem and res2 (their BN become FrozenBN)."""
    import torch

    from detcore.backbones import build_resnet_fpn_backbone

    tiny = [
        "model.backbone.resnet.stem_out_channels=32",
        "model.backbone.resnet.res2_out_channels=64",
        "model.backbone.resnet.width_per_group=32",
        "model.backbone.resnet.depth=18",
        "model.backbone.fpn.out_channels=32",
        f"model.backbone.resnet.norm='{norm}'",
    ]
    for freeze_at in (0, 2):
        cfg = get_config("faster_rcnn_R_50_FPN", [*tiny, f"model.backbone.resnet.freeze_at={freeze_at}"])
        assert cfg.model.backbone.resnet.norm == norm
        assert cfg.model.backbone_name == "resnet_fpn"
        bottom_up = build_resnet_fpn_backbone(cfg.model.backbone).bottom_up
        norms = [m for m in bottom_up.modules() if "Norm" in type(m).__name__]
        stem_norm = type(bottom_up.stem.conv1.norm).__name__ if norm else None
        if freeze_at == 0:
            assert all(p.requires_grad for p in bottom_up.parameters())
            assert {type(m).__name__ for m in norms} == ({norm_type} if norm_type else set())
            assert stem_norm == norm_type
        else:
            assert not any(p.requires_grad for p in bottom_up.stem.parameters())
            assert not any(p.requires_grad for p in bottom_up.res2.parameters())
            assert all(p.requires_grad for p in bottom_up.res3.parameters())
            if norm == "BN":
                assert stem_norm == "FrozenBatchNorm2d"  # frozen stages' BN become FrozenBN
    # freeze_at=0: gradients reach the stem
    bottom_up.train()
    torch.manual_seed(0)
    feats = bottom_up(torch.randn(2, 3, 64, 64))
    sum(f.sum() for f in feats.values()).backward()
    conv = bottom_up.res3[0].conv1
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
