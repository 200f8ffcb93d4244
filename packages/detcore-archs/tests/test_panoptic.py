"""PanopticFPN: detectron2 state-dict names, inference outputs (semantic, instances, panoptic) in the requested
resolution, a training step, and ``combine_semantic_and_instance_outputs`` on hand-made masks."""

from __future__ import annotations

import pytest
import torch

from detcore.archs import (
    GeneralizedRCNN,
    PanopticFPN,
    build_model,
    combine_semantic_and_instance_outputs,
    get_config,
)
from detcore.heads.sem_seg import SemSegFPNHead
from detcore.structures import BitMasks, Boxes, Instances

PIXEL_MEAN = [103.53, 116.28, 123.675]
PIXEL_STD = [57.375, 57.12, 58.395]

SMALL = [
    "model.backbone.resnet.stem_out_channels=8",
    "model.backbone.resnet.res2_out_channels=16",
    "model.backbone.resnet.width_per_group=4",
    "model.backbone.fpn.out_channels=16",
    "model.roi_heads.box_head.fc_dim=32",
    "model.roi_heads.mask_head.conv_dim=16",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.box_predictor.test_score_thresh=0.0",
]


def _read_reference(path):
    expected = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        expected[key] = (tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), dtype)
    return expected


def _panoptic(small: bool, **kwargs) -> PanopticFPN:
    rcnn = build_model(get_config("mask_rcnn_R_50_FPN", SMALL if small else []))
    shapes = rcnn.backbone.output_shape()
    if small:
        sem_shapes = {k: shapes[k] for k in ("p2", "p3", "p4", "p5")}
        sem_seg_head = SemSegFPNHead(sem_shapes, num_classes=4, conv_dims=32, common_stride=4, norm="GN")
    else:
        sem_seg_head = SemSegFPNHead(**SemSegFPNHead.from_config(None, shapes))
    return PanopticFPN(
        backbone=rcnn.backbone,
        proposal_generator=rcnn.proposal_generator,
        roi_heads=rcnn.roi_heads,
        sem_seg_head=sem_seg_head,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        **kwargs,
    )


def test_state_dict_matches_detectron2(reference_dir):
    path = reference_dir / "detectron2-state-dicts" / "panoptic_fpn_R_50.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    expected = _read_reference(path)
    with torch.device("meta"):
        model = _panoptic(small=False)
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert list(got) == list(expected)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    # a low stuff threshold so that stuff segments appear on a small image
    return _panoptic(small=True, combine_stuff_area_thresh=16, combine_instances_score_thresh=0.0).eval()


def test_inference_outputs_in_requested_resolution(small_model):
    assert isinstance(small_model, GeneralizedRCNN)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 128, 160, generator=g) * 255
    with torch.no_grad():
        (out,) = small_model([{"image": image, "height": 96, "width": 120}])
        (native,) = small_model([{"image": image}])
    assert set(out) == {"sem_seg", "instances", "panoptic_seg"}
    assert out["sem_seg"].shape == (4, 96, 120)
    assert native["sem_seg"].shape == (4, 128, 160)
    inst = out["instances"]
    assert inst.image_size == (96, 120) and len(inst) > 0
    assert inst.pred_masks.shape == (len(inst), 96, 120)
    assert (inst.pred_boxes.tensor[:, 0::2] <= 120).all() and (inst.pred_boxes.tensor[:, 1::2] <= 96).all()
    torch.testing.assert_close(inst.pred_boxes.tensor, native["instances"].pred_boxes.tensor * 0.75)
    panoptic_seg, segments_info = out["panoptic_seg"]
    assert panoptic_seg.shape == (96, 120) and panoptic_seg.dtype == torch.int32
    # the panoptic output is the combination of the two postprocessed outputs
    exp_seg, exp_info = combine_semantic_and_instance_outputs(
        inst, out["sem_seg"].argmax(dim=0), 0.5, 16, 0.0
    )
    assert torch.equal(panoptic_seg, exp_seg) and segments_info == exp_info
    ids = sorted(int(i) for i in panoptic_seg.unique().tolist() if i != 0)
    assert ids == sorted(s["id"] for s in segments_info)
    assert [s["id"] for s in segments_info] == list(range(1, len(segments_info) + 1))


def test_inference_without_postprocess(small_model):
    with torch.no_grad():
        detector_results, sem_seg_results = small_model.inference(
            [{"image": torch.rand(3, 100, 150) * 255}], do_postprocess=False
        )
    assert sem_seg_results.shape == (1, 4, 128, 160)  # padded
    assert detector_results[0].image_size == (100, 150)


def _gt(h: int, w: int) -> Instances:
    boxes = torch.tensor([[4.0, 6.0, 40.0, 30.0], [20.0, 10.0, 60.0, 58.0]])
    t = Instances((h, w))
    t.gt_boxes = Boxes(boxes)
    t.gt_classes = torch.tensor([0, 2])
    m = torch.zeros(2, h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        m[i, y0:y1, x0:x1] = True
    t.gt_masks = BitMasks(m)
    return t


def test_training_step():
    torch.manual_seed(0)
    model = _panoptic(small=True).train()
    g = torch.Generator().manual_seed(1)
    sem0 = torch.randint(0, 4, (64, 72), generator=g)
    sem0[:5] = 255
    inputs = [
        {
            "image": torch.randint(0, 256, (3, 64, 72), dtype=torch.uint8),
            "instances": _gt(64, 72),
            "sem_seg": sem0,
        },
        {
            "image": torch.rand(3, 60, 80) * 255,
            "instances": _gt(60, 80),
            "sem_seg": torch.zeros(60, 80, dtype=torch.long),
        },
    ]
    losses = model(inputs)
    assert set(losses) == {
        "loss_sem_seg",
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_cls",
        "loss_box_reg",
        "loss_mask",
    }
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


def test_training_needs_sem_seg_and_instances():
    model = _panoptic(small=True).train()
    image = torch.rand(3, 64, 64) * 255
    with pytest.raises(ValueError, match="'sem_seg' ground truth"):
        model([{"image": image, "instances": _gt(64, 64)}])
    with pytest.raises(ValueError, match="'instances'"):
        model([{"image": image, "sem_seg": torch.zeros(64, 64, dtype=torch.long)}])
    with pytest.raises(ValueError, match="at least one image"):
        model([])


def test_constructor_validation():
    rcnn = build_model(get_config("mask_rcnn_R_50_FPN", SMALL))
    kw = dict(backbone=rcnn.backbone, roi_heads=rcnn.roi_heads, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)
    head = SemSegFPNHead(
        {k: rcnn.backbone.output_shape()[k] for k in ("p2", "p3")},
        num_classes=4,
        conv_dims=32,
        common_stride=4,
    )
    with pytest.raises(ValueError, match="proposal_generator"):
        PanopticFPN(sem_seg_head=head, proposal_generator=None, **kw)
    with pytest.raises(ValueError, match="combine_overlap_thresh"):
        PanopticFPN(
            sem_seg_head=head, proposal_generator=rcnn.proposal_generator, combine_overlap_thresh=-1, **kw
        )
    with pytest.raises(TypeError, match="sem_seg_head"):
        PanopticFPN(sem_seg_head=None, proposal_generator=rcnn.proposal_generator, **kw)


# --- combine_semantic_and_instance_outputs on hand-made masks ---------------------------------------------


def _instances(specs):
    """specs: (score, class, (y0, y1, x0, x1) or None for an empty mask) on an 8x8 image."""
    inst = Instances((8, 8))
    masks = torch.zeros(len(specs), 8, 8, dtype=torch.bool)
    for i, (_, _, box) in enumerate(specs):
        if box is not None:
            y0, y1, x0, x1 = box
            masks[i, y0:y1, x0:x1] = True
    inst.scores = torch.tensor([s for s, _, _ in specs])
    inst.pred_classes = torch.tensor([c for _, c, _ in specs])
    inst.pred_masks = masks
    return inst


# input order is not score order: instance_id is the index in the input
SPECS = [
    (0.8, 2, (2, 6, 2, 6)),  # 0: B, 16 px, 4 px overlap with A (0.25)
    (0.4, 1, (6, 8, 0, 2)),  # 1: below the 0.5 score threshold (would be free)
    (0.9, 1, (0, 4, 0, 4)),  # 2: A, best score
    (0.6, 0, None),  # 3: empty mask: skipped, no id used
    (0.7, 0, (0, 2, 0, 4)),  # 4: inside A (overlap 1.0): skipped
    (0.55, 1, (0, 2, 6, 8)),  # 5: free, 4 px
]


def _semantic():
    sem = torch.zeros(8, 8, dtype=torch.int64)
    sem[6:8, :] = 3  # 16 px, all free
    sem[0:2, 4:6] = 4  # 4 px, free
    sem[4:6, 4:8] = 5  # 8 px, 4 of them taken by instance B
    return sem


def test_combine_hand_made():
    seg, info = combine_semantic_and_instance_outputs(_instances(SPECS), _semantic(), 0.5, 5, 0.5)
    expected = torch.zeros(8, 8, dtype=torch.int32)
    expected[0:4, 0:4] = 1  # A
    b = torch.zeros(8, 8, dtype=torch.bool)
    b[2:6, 2:6] = True
    expected[b & (expected == 0)] = 2  # B minus A
    expected[0:2, 6:8] = 3  # instance 5
    expected[6:8, :] = 4  # stuff 3; label 4 (4 px) and label 5 (4 free px) are below 5
    assert seg.dtype == torch.int32 and seg.shape == (8, 8)
    assert torch.equal(seg, expected)
    assert info == [
        {"id": 1, "isthing": True, "score": pytest.approx(0.9), "category_id": 1, "instance_id": 2},
        {"id": 2, "isthing": True, "score": pytest.approx(0.8), "category_id": 2, "instance_id": 0},
        {"id": 3, "isthing": True, "score": pytest.approx(0.55), "category_id": 1, "instance_id": 5},
        {"id": 4, "isthing": False, "category_id": 3, "area": 16},
    ]
    assert all(isinstance(s["category_id"], int) and isinstance(s["id"], int) for s in info)


def test_combine_thresholds():
    inst, sem = _instances(SPECS), _semantic()
    # stuff area threshold is inclusive: 4-px stuff regions now count; label 5 counts its free pixels only
    _, info = combine_semantic_and_instance_outputs(inst, sem, 0.5, 4, 0.5)
    assert [(s["category_id"], s["area"]) for s in info if not s["isthing"]] == [(3, 16), (4, 4), (5, 4)]
    # overlap threshold: B overlaps A by 0.25 of its area; it is kept at 0.25 (strict >), dropped below
    _, info = combine_semantic_and_instance_outputs(inst, sem, 0.25, 5, 0.5)
    assert [s["instance_id"] for s in info if s["isthing"]] == [2, 0, 5]
    seg, info = combine_semantic_and_instance_outputs(inst, sem, 0.2, 5, 0.5)
    assert [s["instance_id"] for s in info if s["isthing"]] == [2, 5]
    assert (seg[2:4, 4:6] == 0).all()  # B's pixels on semantic label 0 stay void (0 = things is never stuff)
    # ... and stuff label 5 now has all its 8 pixels free
    assert [(s["id"], s["category_id"], s["area"]) for s in info if not s["isthing"]] == [
        (3, 3, 16),
        (4, 5, 8),
    ]
    assert (seg[4:6, 4:8] == 4).all()
    # score threshold: lowering it lets instance 1 in (and removes its pixels from stuff 3)
    _, info = combine_semantic_and_instance_outputs(inst, sem, 0.5, 5, 0.3)
    assert [s["instance_id"] for s in info if s["isthing"]] == [2, 0, 5, 1]
    assert [(s["category_id"], s["area"]) for s in info if not s["isthing"]] == [(3, 12)]
    # no instance at all: only stuff
    seg, info = combine_semantic_and_instance_outputs(_instances([]), sem, 0.5, 5, 0.5)
    assert info == [
        {"id": 1, "isthing": False, "category_id": 3, "area": 16},
        {"id": 2, "isthing": False, "category_id": 5, "area": 8},
    ]
    assert int((seg == 2).sum()) == 8


def test_combine_bad_inputs():
    inst = _instances(SPECS)
    with pytest.raises(TypeError, match="integer labels"):
        combine_semantic_and_instance_outputs(inst, torch.zeros(8, 8), 0.5, 5, 0.5)
    with pytest.raises(ValueError, match=r"Tensor\[H, W\]"):
        combine_semantic_and_instance_outputs(inst, torch.zeros(1, 8, 8, dtype=torch.long), 0.5, 5, 0.5)
    with pytest.raises(ValueError, match=r"pred_masks must be \[N, H, W\]"):
        combine_semantic_and_instance_outputs(inst, torch.zeros(8, 9, dtype=torch.long), 0.5, 5, 0.5)
    no_masks = Instances((8, 8), scores=torch.ones(1), pred_classes=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="pred_masks"):
        combine_semantic_and_instance_outputs(no_masks, torch.zeros(8, 8, dtype=torch.long), 0.5, 5, 0.5)


def test_registered():
    from detcore.plugins import get_component

    assert get_component("meta_arch", "PanopticFPN") is PanopticFPN
