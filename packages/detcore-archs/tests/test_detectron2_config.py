"""detectron2 YAML configs (full dumps and zoo files with _BASE_) read into detcore configs."""

from __future__ import annotations

import dataclasses

import pytest

from detcore.archs import build_model, from_detectron2_config, get_config, load_checkpoint

D2_BASE_RCNN_FPN = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: [[32], [64], [128], [256], [512]]  # One size for each in feature map
    ASPECT_RATIOS: [[0.5, 1.0, 2.0]]  # Three aspect ratios (same for all in feature maps)
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
    PRE_NMS_TOPK_TRAIN: 2000  # Per FPN level
    PRE_NMS_TOPK_TEST: 1000  # Per FPN level
    POST_NMS_TOPK_TRAIN: 1000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
  ROI_MASK_HEAD:
    NAME: "MaskRCNNConvUpsampleHead"
    NUM_CONV: 4
    POOLER_RESOLUTION: 14
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
VERSION: 2
"""

D2_MASK_RCNN_1X = """\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  MASK_ON: True
  RESNETS:
    DEPTH: 50
"""

D2_BASE_RCNN_C4 = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  RPN:
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "Res5ROIHeads"
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
"""


def test_golden_dump_builds_the_golden_model(reference_dir, tiny_overrides):
    d = reference_dir / "golden" / "mask_rcnn_tiny"
    if not (d / "config.yaml").is_file():
        pytest.fail("mask_rcnn_tiny golden data not found beside the checkout")
    cfg = from_detectron2_config(d / "config.yaml")
    expected = get_config(
        "mask_rcnn_R_50_FPN",
        [
            *tiny_overrides,
            "input.min_size_train=[256]",
            "input.max_size_train=384",
            # the golden run's DATALOADER / DATASETS (its SOLVER is Base-RCNN-FPN's)
            "dataloader.num_workers=0",
            "datasets.train=[gshapes_train]",
            "datasets.test=[gshapes_val]",
        ],
    )
    assert cfg == expected
    assert cfg.solver.base_lr == 0.02 and cfg.solver.steps == (60000, 80000) and cfg.solver.max_iter == 90000
    model = build_model(cfg)
    assert load_checkpoint(model, d / "model.pth", strict=True).ok


def test_zoo_files_with_base(tmp_path):
    (tmp_path / "Base-RCNN-FPN.yaml").write_text(D2_BASE_RCNN_FPN)
    (tmp_path / "COCO-InstanceSegmentation").mkdir()
    child = tmp_path / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml"
    child.write_text(D2_MASK_RCNN_1X)
    cfg = from_detectron2_config(child)
    expected = get_config("mask_rcnn_R_50_FPN")
    assert cfg == dataclasses.replace(
        expected,
        model=dataclasses.replace(expected.model, weights="detectron2://ImageNetPretrained/MSRA/R-50.pkl"),
    )
    assert cfg.input.min_size_train == (640, 672, 704, 736, 768, 800)  # detectron2's tuple-as-string form


def test_c4(tmp_path):
    (tmp_path / "Base-RCNN-C4.yaml").write_text(D2_BASE_RCNN_C4)
    (tmp_path / "f.yaml").write_text('_BASE_: "Base-RCNN-C4.yaml"\nMODEL:\n  MASK_ON: False\n')
    assert from_detectron2_config(tmp_path / "f.yaml") == get_config("faster_rcnn_R_50_C4")


D2_BASE_RETINANET = """\
MODEL:
  META_ARCHITECTURE: "RetinaNet"
  BACKBONE:
    NAME: "build_retinanet_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: [[32, 40.31747359663594, 50.79683366298238], [64, 80.63494719327188, 101.59366732596476],
      [128, 161.26989438654377, 203.18733465192952], [256, 322.53978877308754, 406.37466930385904],
      [512, 645.0795775461751, 812.7493386077181]]
  FPN:
    IN_FEATURES: ["res3", "res4", "res5"]
  RETINANET:
    IOU_THRESHOLDS: [0.4, 0.5]
    IOU_LABELS: [0, -1, 1]
    SMOOTH_L1_LOSS_BETA: 0.0
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
"""


def test_retinanet(tmp_path):
    (tmp_path / "Base-RetinaNet.yaml").write_text(D2_BASE_RETINANET)
    (tmp_path / "r.yaml").write_text('_BASE_: "Base-RetinaNet.yaml"\nMODEL:\n  RESNETS:\n    DEPTH: 50\n')
    assert from_detectron2_config(tmp_path / "r.yaml") == get_config("retinanet_R_50_FPN")
    cfg = from_detectron2_config(
        {"MODEL": {"META_ARCHITECTURE": "RetinaNet", "RETINANET": {"NUM_CLASSES": 4}}}
    )
    assert cfg.model.retinanet.num_classes == 4


def test_defaults_and_mapping_input():
    assert from_detectron2_config({}) == from_detectron2_config({"MODEL": {}})
    cfg = from_detectron2_config(
        {"MODEL": {"META_ARCHITECTURE": "ProposalNetwork", "RPN": {"NMS_THRESH": 0.6}}}
    )
    assert cfg.model.meta_architecture == "ProposalNetwork"
    assert cfg.model.proposal_generator.nms_thresh == 0.6


@pytest.mark.parametrize(
    ("d2", "pattern"),
    [
        ({"MODEL": {"BACKBONE": {"NAME": "build_vit_backbone"}}}, "MODEL.BACKBONE.NAME 'build_vit_backbone'"),
        ({"MODEL": {"ROI_HEADS": {"NAME": "CascadeROIHeads"}}}, "MODEL.ROI_HEADS.NAME 'CascadeROIHeads'"),
        ({"MODEL": {"META_ARCHITECTURE": "PanopticFPN"}}, "MODEL.META_ARCHITECTURE 'PanopticFPN'"),
        (
            {"MODEL": {"ROI_HEADS": {"NUM_CLASSES": "many"}}},
            r"model\.roi_heads\.num_classes: expected an int",
        ),
    ],
)
def test_unsupported(d2, pattern):
    with pytest.raises(ValueError, match=pattern):
        from_detectron2_config(d2)


def test_bad_source(tmp_path):
    with pytest.raises(TypeError, match="path or a mapping"):
        from_detectron2_config(3)
    with pytest.raises(FileNotFoundError):
        from_detectron2_config(tmp_path / "none.yaml")
