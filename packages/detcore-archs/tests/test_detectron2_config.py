"""detectron2 YAML configs (full dumps and zoo files with _BASE_) read into detcore configs."""

from __future__ import annotations

import dataclasses

import pytest

from detcore.archs import (
    AMPConfig,
    ClipGradientsConfig,
    DataLoaderConfig,
    DatasetsConfig,
    SolverConfig,
    build_model,
    config_to_dict,
    from_detectron2_config,
    get_config,
    load_checkpoint,
)

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
    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]
  FPN:
    IN_FEATURES: ["res3", "res4", "res5"]
  RETINANET:
    IOU_THRESHOLDS: [0.4, 0.5]
    IOU_LABELS: [0, -1, 1]
    SMOOTH_L1_LOSS_BETA: 0.0
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.01  # Note that RetinaNet uses a different default learning rate
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
VERSION: 2
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
        ({"MODEL": {"ROI_HEADS": {"NAME": "PointRendROIHeads"}}}, "MODEL.ROI_HEADS.NAME 'PointRendROIHeads'"),
        ({"MODEL": {"META_ARCHITECTURE": "MaskFormer"}}, "MODEL.META_ARCHITECTURE 'MaskFormer'"),
        (
            {"MODEL": {"PROPOSAL_GENERATOR": {"NAME": "CenterNet"}}},
            "MODEL.PROPOSAL_GENERATOR.NAME 'CenterNet'",
        ),
        ({"SOLVER": {"REFERENCE_WORLD_SIZE": 8}}, "SOLVER.REFERENCE_WORLD_SIZE 8 is not supported"),
        ({"SOLVER": {"LR_SCHEDULER_NAME": "WarmupStepWithFixedGammaLR"}}, "lr_scheduler_name must be one of"),
        ({"SOLVER": {"STEPS": 1000}}, r"solver\.steps: expected a list"),
        ({"DATALOADER": {"REPEAT_SQRT": False}}, "DATALOADER.REPEAT_SQRT False is not supported"),
        (
            {"MODEL": {"META_ARCHITECTURE": "PanopticFPN", "PANOPTIC_FPN": {"INSTANCE_LOSS_WEIGHT": 0.5}}},
            "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT 0.5 is not supported",
        ),
        (
            {"MODEL": {"META_ARCHITECTURE": "FCOS", "FCOS": {"NUM_CLASS": 3}}},
            "unknown FCOS key MODEL.FCOS.NUM_CLASS",
        ),
        (
            {"MODEL": {"META_ARCHITECTURE": "FCOS", "FCOS": {"HEAD": {"NROM": "GN"}}}},
            "unknown FCOS key MODEL.FCOS.HEAD.NROM",
        ),
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


D2_BASE_RCNN_DILATED_C5 = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  RESNETS:
    OUT_FEATURES: ["res5"]
    RES5_DILATION: 2
  RPN:
    IN_FEATURES: ["res5"]
    PRE_NMS_TOPK_TEST: 6000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["res5"]
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
  ROI_MASK_HEAD:
    NAME: "MaskRCNNConvUpsampleHead"
    NUM_CONV: 4
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

_R50 = 'WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"'
_3X = "SOLVER:\n  STEPS: (210000, 250000)\n  MAX_ITER: 270000\n"


def _zoo_child(base: str, model: str = "", extra: str = "", weights: str = _R50) -> str:
    return f'_BASE_: "{base}"\nMODEL:\n  {weights}\n{model}{extra}'


# detectron2's model-zoo files (configs/...), as detectron2 ships them; the rotated one (detectron2 has no zoo
# file for it) uses the keys of detectron2's rotated tests, FCOS (a LazyConfig in detectron2) detcore's
# MODEL.FCOS mapping (see detcore.archs.detectron2_config)
D2_ZOO = {
    "Base-RCNN-FPN.yaml": D2_BASE_RCNN_FPN,
    "Base-RCNN-C4.yaml": D2_BASE_RCNN_C4,
    "Base-RCNN-DilatedC5.yaml": D2_BASE_RCNN_DILATED_C5,
    "Base-RetinaNet.yaml": D2_BASE_RETINANET,
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n", _3X
    ),
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml": _zoo_child(
        "../Base-RCNN-C4.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-Detection/faster_rcnn_R_50_C4_3x.yaml": _zoo_child(
        "../Base-RCNN-C4.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n", _3X
    ),
    "COCO-Detection/faster_rcnn_R_50_DC5_1x.yaml": _zoo_child(
        "../Base-RCNN-DilatedC5.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml": _zoo_child(
        "../Base-RCNN-DilatedC5.yaml", "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n", _3X
    ),
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        "  MASK_ON: False\n  RESNETS:\n    DEPTH: 101\n",
        _3X,
        weights='WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-101.pkl"',
    ),
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        "  MASK_ON: False\n  PIXEL_STD: [57.375, 57.120, 58.395]\n  RESNETS:\n"
        "    STRIDE_IN_1X1: False  # this is a C2 model\n    NUM_GROUPS: 32\n    WIDTH_PER_GROUP: 8\n"
        "    DEPTH: 101\n",
        _3X,
        weights='WEIGHTS: "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"',
    ),
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RetinaNet.yaml", "  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml": _zoo_child(
        "../Base-RetinaNet.yaml", "  RESNETS:\n    DEPTH: 50\n", _3X
    ),
    "COCO-Detection/rpn_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        '  META_ARCHITECTURE: "ProposalNetwork"\n  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n'
        "  RPN:\n    POST_NMS_TOPK_TEST: 2000\n",
    ),
    "COCO-Detection/fcos_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RetinaNet.yaml",
        '  META_ARCHITECTURE: "FCOS"\n  PIXEL_STD: [57.375, 57.120, 58.395]\n  RESNETS:\n    DEPTH: 50\n'
        "  FCOS:\n    NUM_CLASSES: 80\n    HEAD_IN_FEATURES: [p3, p4, p5, p6, p7]\n"
        "    CENTER_SAMPLING_RADIUS: 1.5\n    FOCAL_LOSS_ALPHA: 0.25\n    FOCAL_LOSS_GAMMA: 2.0\n"
        "    TEST_SCORE_THRESH: 0.2\n    TEST_TOPK_CANDIDATES: 1000\n    TEST_NMS_THRESH: 0.6\n"
        "    MAX_DETECTIONS_PER_IMAGE: 100\n    HEAD:\n      PRIOR_PROB: 0.01\n      NORM: GN\n",
        "SOLVER:\n  BASE_LR: 0.01\n",
    ),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": D2_MASK_RCNN_1X,
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml": D2_MASK_RCNN_1X + _3X,
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml": _zoo_child(
        "../Base-RCNN-C4.yaml", "  MASK_ON: True\n  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml": _zoo_child(
        "../Base-RCNN-C4.yaml", "  MASK_ON: True\n  RESNETS:\n    DEPTH: 50\n", _3X
    ),
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        "  MASK_ON: True\n  RESNETS:\n    DEPTH: 50\n"
        "    DEFORM_ON_PER_STAGE: [False, True, True, True] # on Res3,Res4,Res5\n    DEFORM_MODULATED: False\n",
    ),
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        "  MASK_ON: True\n  RESNETS:\n    DEPTH: 50\n  ROI_HEADS:\n    NAME: CascadeROIHeads\n"
        "  ROI_BOX_HEAD:\n    CLS_AGNOSTIC_BBOX_REG: True\n  RPN:\n    POST_NMS_TOPK_TRAIN: 2000\n",
    ),
    "Misc/semantic_R_50_FPN_1x.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        '  META_ARCHITECTURE: "SemanticSegmentor"\n  RESNETS:\n    DEPTH: 50\n',
        'DATASETS:\n  TRAIN: ("coco_2017_train_panoptic_stuffonly",)\n'
        '  TEST: ("coco_2017_val_panoptic_stuffonly",)\n'
        "INPUT:\n  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)\n",
    ),
    "Misc/rotated_faster_rcnn_R_50_FPN.yaml": _zoo_child(
        "../Base-RCNN-FPN.yaml",
        "  MASK_ON: False\n  RESNETS:\n    DEPTH: 50\n"
        "  ANCHOR_GENERATOR:\n    NAME: RotatedAnchorGenerator\n    ANGLES: [[-90, -60, -30, 0, 30, 60, 90]]\n"
        "  PROPOSAL_GENERATOR:\n    NAME: RRPN\n  RPN:\n    BBOX_REG_WEIGHTS: (1, 1, 1, 1, 1)\n"
        "  ROI_HEADS:\n    NAME: RROIHeads\n"
        "  ROI_BOX_HEAD:\n    POOLER_TYPE: ROIAlignRotated\n    BBOX_REG_WEIGHTS: (10, 10, 5, 5, 1)\n",
    ),
    "COCO-Keypoints/Base-Keypoint-RCNN-FPN.yaml": """\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  KEYPOINT_ON: True
  ROI_HEADS:
    NUM_CLASSES: 1
  ROI_BOX_HEAD:
    SMOOTH_L1_BETA: 0.5  # Keypoint AP degrades (though box AP improves) when using plain L1 loss
  RPN:
    # Detectron1 uses 2000 proposals per-batch, but this option is per-image in detectron2.
    # 1000 proposals per-image is found to hurt box AP.
    # Therefore we increase it to 1500 per-image.
    POST_NMS_TOPK_TRAIN: 1500
DATASETS:
  TRAIN: ("keypoints_coco_2017_train",)
  TEST: ("keypoints_coco_2017_val",)
""",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml": _zoo_child(
        "Base-Keypoint-RCNN-FPN.yaml", "  RESNETS:\n    DEPTH: 50\n"
    ),
    "COCO-PanopticSegmentation/Base-Panoptic-FPN.yaml": """\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  META_ARCHITECTURE: "PanopticFPN"
  MASK_ON: True
  SEM_SEG_HEAD:
    LOSS_WEIGHT: 0.5
DATASETS:
  TRAIN: ("coco_2017_train_panoptic_separated",)
  TEST: ("coco_2017_val_panoptic_separated",)
DATALOADER:
  FILTER_EMPTY_ANNOTATIONS: False
""",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml": _zoo_child(
        "Base-Panoptic-FPN.yaml", "  RESNETS:\n    DEPTH: 50\n"
    ),
}

# detectron2 zoo file -> the detcore named config of the same architecture and schedule
ZOO_TO_NAMED = {
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml": "faster_rcnn_R_50_FPN_1x",
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml": "faster_rcnn_R_50_FPN_3x",
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml": "faster_rcnn_R_50_C4_1x",
    "COCO-Detection/faster_rcnn_R_50_C4_3x.yaml": "faster_rcnn_R_50_C4_3x",
    "COCO-Detection/faster_rcnn_R_50_DC5_1x.yaml": "faster_rcnn_R_50_DC5_1x",
    "COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml": "faster_rcnn_R_50_DC5_3x",
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml": "faster_rcnn_R_101_FPN_3x",
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x.yaml": "faster_rcnn_X_101_32x8d_FPN_3x",
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml": "retinanet_R_50_FPN_1x",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml": "retinanet_R_50_FPN_3x",
    "COCO-Detection/rpn_R_50_FPN_1x.yaml": "rpn_R_50_FPN_1x",
    "COCO-Detection/fcos_R_50_FPN_1x.yaml": "fcos_R_50_FPN_1x",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml": "mask_rcnn_R_50_FPN_1x",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml": "mask_rcnn_R_50_FPN_3x",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml": "mask_rcnn_R_50_C4_1x",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml": "mask_rcnn_R_50_C4_3x",
    "Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml": "mask_rcnn_R_50_FPN_dconv_c3-c5",
    "Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml": "cascade_mask_rcnn_R_50_FPN_1x",
    "Misc/semantic_R_50_FPN_1x.yaml": "semantic_R_50_FPN_1x",
    "Misc/rotated_faster_rcnn_R_50_FPN.yaml": "rotated_faster_rcnn_R_50_FPN",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml": "keypoint_rcnn_R_50_FPN_1x",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml": "panoptic_fpn_R_50_1x",
}


@pytest.fixture(scope="module")
def d2_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2_configs")
    for rel, text in D2_ZOO.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(("zoo_file", "named"), sorted(ZOO_TO_NAMED.items()))
def test_every_zoo_architecture_converts_to_its_named_config(d2_zoo, zoo_file, named):
    got = config_to_dict(from_detectron2_config(d2_zoo / zoo_file))
    expected = config_to_dict(get_config(named))
    # the zoo files name their ImageNet initialisation; the named configs leave weights to the user
    assert got["model"].pop("weights").startswith("detectron2://ImageNetPretrained/")
    assert expected["model"].pop("weights") == ""
    assert got == expected


def test_zoo_solver_values(d2_zoo):
    s = from_detectron2_config(d2_zoo / "COCO-Detection/retinanet_R_50_FPN_3x.yaml").solver
    assert (s.ims_per_batch, s.base_lr, s.steps, s.max_iter) == (16, 0.01, (210000, 250000), 270000)
    cfg = from_detectron2_config(d2_zoo / "COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    assert cfg.dataloader.filter_empty_annotations is False
    assert cfg.datasets.train == ("coco_2017_train_panoptic_separated",)


def test_solver_dataloader_keys():
    cfg = from_detectron2_config(
        {
            "SOLVER": {
                "BASE_LR": 0.0006,
                "BASE_LR_END": 1e-6,
                "MOMENTUM": 0.8,
                "NESTEROV": True,
                "WEIGHT_DECAY": 5e-5,
                "WEIGHT_DECAY_NORM": 1e-5,
                "WEIGHT_DECAY_BIAS": 0.0,
                "BIAS_LR_FACTOR": 2.0,
                "LR_SCHEDULER_NAME": "WarmupCosineLR",
                "GAMMA": 0.5,
                "STEPS": "(10, 20)",
                "MAX_ITER": 30,
                "WARMUP_FACTOR": 0.1,
                "WARMUP_ITERS": 5,
                "WARMUP_METHOD": "constant",
                "CHECKPOINT_PERIOD": 7,
                "IMS_PER_BATCH": 2,
                "CLIP_GRADIENTS": {"ENABLED": True, "CLIP_TYPE": "norm", "CLIP_VALUE": 3.0, "NORM_TYPE": 1.0},
                "AMP": {"ENABLED": True},
                "REFERENCE_WORLD_SIZE": 0,
                "NUM_DECAYS": 3,
            },
            "DATALOADER": {
                "NUM_WORKERS": 1,
                "ASPECT_RATIO_GROUPING": False,
                "FILTER_EMPTY_ANNOTATIONS": False,
                "SAMPLER_TRAIN": "RepeatFactorTrainingSampler",
                "REPEAT_THRESHOLD": 0.001,
                "REPEAT_SQRT": True,
            },
            "DATASETS": {"TRAIN": ["a", "b"], "TEST": "('c',)"},
        }
    )
    assert cfg.solver == SolverConfig(
        optimizer="SGD",
        ims_per_batch=2,
        base_lr=0.0006,
        base_lr_end=1e-6,
        momentum=0.8,
        nesterov=True,
        weight_decay=5e-5,
        weight_decay_norm=1e-5,
        weight_decay_bias=0.0,
        bias_lr_factor=2.0,
        lr_scheduler_name="WarmupCosineLR",
        gamma=0.5,
        steps=(10, 20),
        max_iter=30,
        warmup_factor=0.1,
        warmup_iters=5,
        warmup_method="constant",
        checkpoint_period=7,
        clip_gradients=ClipGradientsConfig(enabled=True, clip_type="norm", clip_value=3.0, norm_type=1.0),
        amp=AMPConfig(enabled=True),
    )
    assert cfg.dataloader == DataLoaderConfig(
        num_workers=1,
        aspect_ratio_grouping=False,
        filter_empty_annotations=False,
        sampler_train="RepeatFactorTrainingSampler",
        repeat_threshold=0.001,
    )
    assert cfg.datasets == DatasetsConfig(train=("a", "b"), test=("c",))


def test_fcos_p6_from_p5(d2_zoo):
    cfg = from_detectron2_config(d2_zoo / "COCO-Detection/fcos_R_50_FPN_1x.yaml")
    assert cfg.model.backbone_name == "fcos_resnet_fpn"
    sd = build_model(cfg, device="meta").state_dict()
    assert tuple(sd["backbone.top_block.p6.weight"].shape) == (256, 256, 3, 3)
    assert tuple(sd["head.ctrness.weight"].shape) == (1, 256, 3, 3)
    # every MODEL.FCOS key reaches model.fcos
    cfg = from_detectron2_config(
        {
            "MODEL": {
                "META_ARCHITECTURE": "FCOS",
                "BACKBONE": {"NAME": "build_fcos_resnet_fpn_backbone"},
                "FCOS": {
                    "NUM_CLASSES": 3,
                    "HEAD_IN_FEATURES": ["p3", "p4"],
                    "CENTER_SAMPLING_RADIUS": 2.0,
                    "FOCAL_LOSS_ALPHA": 0.3,
                    "FOCAL_LOSS_GAMMA": 1.5,
                    "TEST_SCORE_THRESH": 0.1,
                    "TEST_TOPK_CANDIDATES": 50,
                    "TEST_NMS_THRESH": 0.4,
                    "HEAD": {"CONV_DIMS": [64, 64], "NORM": "", "PRIOR_PROB": 0.02},
                },
            },
            "TEST": {"DETECTIONS_PER_IMAGE": 7},
        }
    )
    f = cfg.model.fcos
    assert cfg.model.backbone_name == "fcos_resnet_fpn"
    assert (f.num_classes, f.in_features, f.center_sampling_radius) == (3, ("p3", "p4"), 2.0)
    assert (f.focal_loss_alpha, f.focal_loss_gamma) == (0.3, 1.5)
    assert (f.test_score_thresh, f.test_topk_candidates, f.test_nms_thresh) == (0.1, 50, 0.4)
    assert f.max_detections_per_image == 7  # TEST.DETECTIONS_PER_IMAGE unless MODEL.FCOS sets it
    assert (f.head.conv_dims, f.head.norm, f.head.prior_prob) == ((64, 64), "", 0.02)


def test_eval_tag_is_restricted(tmp_path):
    (tmp_path / "ok.yaml").write_text(
        "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  ANCHOR_GENERATOR:\n    SIZES: !!python/object/apply:eval "
        '["[[x, x * 2] for x in [16, 32]]"]\n'
    )
    cfg = from_detectron2_config(tmp_path / "ok.yaml")
    assert cfg.model.retinanet.anchor_generator.sizes == ((16, 32), (32, 64))
    for expr in [
        "__import__('os').getcwd()",
        "[1].__class__",
        "open('x')",
        "y + 1",
        "'a' * 3",
        "9 ** 9 ** 9",
        "[0] * 10**9",
        "[x for x in [1] if x]",
        "[x for x in 3]",
        "1 / 0",
    ]:
        (tmp_path / "bad.yaml").write_text(f"MODEL:\n  PIXEL_STD: !!python/object/apply:eval [{expr!r}]\n")
        with pytest.raises(ValueError, match="apply:eval"):
            from_detectron2_config(tmp_path / "bad.yaml")
