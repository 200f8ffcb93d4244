"""StandardROIHeads training: proposal labelling/sampling, losses and gradients of the box, mask and keypoint
branches with several, one or no ground-truth instances, and the errors for missing target fields."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from detcore.heads import Box2BoxTransform, Matcher, ROIPooler
from detcore.heads.build import build_component
from detcore.heads.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    StandardROIHeads,
    StandardROIHeadsConfig,
    add_ground_truth_to_proposals,
)
from detcore.ops import ShapeSpec
from detcore.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks

H, W = 64, 96
NUM_CLASSES = 3
NUM_KP = 4
IN_FEATURES = ["p2", "p3"]
SCALES = [1 / 4, 1 / 8]


def _build(mask: bool = True, keypoint: bool = True, append_gt: bool = True, **kw) -> StandardROIHeads:
    torch.manual_seed(0)
    box_head = FastRCNNConvFCHead(ShapeSpec(channels=8, height=4, width=4), conv_dims=[8], fc_dims=[16, 16])
    predictor = FastRCNNOutputLayers(
        box_head.output_shape,
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=NUM_CLASSES,
        **kw,
    )
    extra = {}
    if mask:
        extra.update(
            mask_in_features=IN_FEATURES,
            mask_pooler=ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
            mask_head=MaskRCNNConvUpsampleHead(
                ShapeSpec(channels=8), num_classes=NUM_CLASSES, conv_dims=[8, 8]
            ),
        )
    if keypoint:
        extra.update(
            keypoint_in_features=IN_FEATURES,
            keypoint_pooler=ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
            keypoint_head=KRCNNConvDeconvUpsampleHead(
                ShapeSpec(channels=8), num_keypoints=NUM_KP, conv_dims=[8]
            ),
        )
    return StandardROIHeads(
        num_classes=NUM_CLASSES,
        batch_size_per_image=32,
        positive_fraction=0.25,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        proposal_append_gt=append_gt,
        box_in_features=IN_FEATURES,
        box_pooler=ROIPooler(4, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
        box_head=box_head,
        box_predictor=predictor,
        **extra,
    ).train()


def _features(n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "p2": torch.randn(n, 8, H // 4, W // 4, generator=g),
        "p3": torch.randn(n, 8, H // 8, W // 8, generator=g),
    }


def _proposals(n_img: int = 2, n: int = 40, seed: int = 2) -> list[Instances]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_img):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W - 20.0, H - 20.0])
        wh = torch.rand(n, 2, generator=g) * 30 + 6
        boxes = torch.cat([xy, (xy + wh).clamp(max=torch.tensor([W, H]))], dim=1)
        out.append(
            Instances((H, W), proposal_boxes=Boxes(boxes), objectness_logits=torch.randn(n, generator=g))
        )
    return out


def _square_polygon(b):
    x0, y0, x1, y1 = (float(v) for v in b)
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def _targets(num_per_image, bitmasks: bool = False) -> list[Instances]:
    g = torch.Generator().manual_seed(3)
    out = []
    for n in num_per_image:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0])
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 15], dim=1)
        t = Instances(
            (H, W), gt_boxes=Boxes(boxes), gt_classes=torch.randint(0, NUM_CLASSES, (n,), generator=g)
        )
        if bitmasks:
            m = torch.zeros(n, H, W, dtype=torch.bool)
            for i, b in enumerate(boxes.round().long().tolist()):
                m[i, b[1] : b[3], b[0] : b[2]] = True
            t.gt_masks = BitMasks(m)
        else:
            t.gt_masks = PolygonMasks([_square_polygon(b) for b in boxes])
        kp = torch.zeros(n, NUM_KP, 3)
        kp[..., 0] = boxes[:, None, 0] + (boxes[:, None, 2] - boxes[:, None, 0]) * torch.rand(
            n, NUM_KP, generator=g
        )
        kp[..., 1] = boxes[:, None, 1] + (boxes[:, None, 3] - boxes[:, None, 1]) * torch.rand(
            n, NUM_KP, generator=g
        )
        kp[..., 2] = 2
        t.gt_keypoints = Keypoints(kp)
        out.append(t)
    return out


def _check_losses_and_grads(model, losses, expect_nonzero_grads: bool) -> None:
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_keypoint"}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if expect_nonzero_grads:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bitmasks", [False, True])
def test_training_several_instances_all_losses_and_gradients(bitmasks):
    model = _build()
    torch.manual_seed(0)
    proposals, losses = model(None, _features(), _proposals(), _targets([3, 2], bitmasks=bitmasks))
    assert len(proposals) == 2
    for p in proposals:
        assert len(p) <= 32
        assert p.has("gt_classes")
        fg = (p.gt_classes >= 0) & (p.gt_classes < NUM_CLASSES)
        assert fg.sum() <= int(32 * 0.25)
        assert fg.any()  # appended gt boxes match themselves
    assert losses["loss_box_reg"] >= 0 and losses["loss_mask"] > 0 and losses["loss_keypoint"] > 0
    _check_losses_and_grads(model, losses, expect_nonzero_grads=True)


def test_training_one_instance_and_zero_instances():
    model = _build()
    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([1, 0]))
    _check_losses_and_grads(model, losses, expect_nonzero_grads=True)

    torch.manual_seed(0)
    proposals, losses = model(None, _features(), _proposals(), _targets([0, 0]))
    for p in proposals:
        assert (p.gt_classes == NUM_CLASSES).all()
    assert losses["loss_box_reg"].detach().item() == 0.0
    assert losses["loss_mask"].detach().item() == 0.0 and losses["loss_keypoint"].detach().item() == 0.0
    assert losses["loss_cls"] > 0
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)


def test_training_no_proposal_matches_any_gt():
    model = _build(append_gt=False)
    targets = _targets([2, 1])
    proposals = []
    for _ in range(2):  # tiny boxes in the corner, IoU 0 with every gt box
        boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [0.0, 1.0, 2.0, 4.0]])
        proposals.append(Instances((H, W), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(3)))
    for t in targets:  # move the gt away from the corner
        t.gt_boxes = Boxes(t.gt_boxes.tensor.clamp(min=20.0) + torch.tensor([0.0, 0.0, 5.0, 5.0]))
    torch.manual_seed(0)
    sampled, losses = model(None, _features(), proposals, targets)
    for p in sampled:
        assert (p.gt_classes == NUM_CLASSES).all()
    assert losses["loss_box_reg"].detach().item() == 0.0
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)


def test_train_on_pred_boxes_runs():
    model = _build(keypoint=False)
    model.train_on_pred_boxes = True
    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([2, 1]))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_label_and_sample_proposals_matches_by_iou():
    model = _build(mask=False, keypoint=False)
    targets = [
        Instances(
            (H, W), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0]])), gt_classes=torch.tensor([2])
        )
    ]
    boxes = torch.tensor(
        [
            [10.0, 10.0, 30.0, 31.0],  # IoU 0.95 -> class 2
            [10.0, 10.0, 20.0, 20.0],  # IoU 0.25 -> background
            [50.0, 40.0, 60.0, 50.0],  # IoU 0 -> background
        ]
    )
    proposals = [Instances((H, W), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(3))]
    torch.manual_seed(0)
    out = model.label_and_sample_proposals(proposals, targets)[0]
    assert len(out) == 4  # 3 proposals + the appended gt box
    by_box = {tuple(b.tolist()): int(c) for b, c in zip(out.proposal_boxes.tensor, out.gt_classes)}
    assert by_box[(10.0, 10.0, 30.0, 31.0)] == 2
    assert by_box[(10.0, 10.0, 30.0, 30.0)] == 2
    assert by_box[(10.0, 10.0, 20.0, 20.0)] == NUM_CLASSES
    assert by_box[(50.0, 40.0, 60.0, 50.0)] == NUM_CLASSES
    fg = out.gt_classes == 2
    torch.testing.assert_close(out.gt_boxes.tensor[fg], torch.tensor([[10.0, 10.0, 30.0, 30.0]] * 2))


def test_add_ground_truth_to_proposals_logits():
    proposals = _proposals(1, 5)
    gt = [
        Instances((H, W), gt_boxes=Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]])), gt_classes=torch.tensor([0]))
    ]
    out = add_ground_truth_to_proposals(gt, proposals)[0]
    assert len(out) == 6
    torch.testing.assert_close(out.proposal_boxes.tensor[-1], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    expected = float(np.log((1.0 - 1e-10) / 1e-10))
    assert out.objectness_logits[-1].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("use_fed_loss", [False, True])
def test_sigmoid_ce_and_fed_loss_paths(use_fed_loss):
    kw = {"use_sigmoid_ce": True, "use_fed_loss": use_fed_loss}
    if use_fed_loss:
        kw.update(get_fed_loss_cls_weights=lambda: torch.ones(NUM_CLASSES), fed_loss_num_classes=2)
    model = _build(**kw)
    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([3, 1]))
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)
    assert losses["loss_cls"] > 0


def test_missing_gt_masks_names_field_and_head():
    model = _build(keypoint=False)
    targets = _targets([2, 1])
    targets[1].remove("gt_masks")
    with pytest.raises(ValueError, match=r"gt_masks.*mask head"):
        model(None, _features(), _proposals(), targets)


def test_missing_gt_keypoints_names_field_and_head():
    model = _build(mask=False)
    targets = _targets([2, 1])
    targets[0].remove("gt_keypoints")
    with pytest.raises(ValueError, match=r"gt_keypoints.*keypoint head"):
        model(None, _features(), _proposals(), targets)


def test_missing_gt_classes_and_targets_errors():
    model = _build(mask=False, keypoint=False)
    targets = _targets([1, 1])
    targets[0].remove("gt_classes")
    with pytest.raises(ValueError, match=r"gt_classes.*box head"):
        model(None, _features(), _proposals(), targets)
    with pytest.raises(ValueError, match="targets"):
        model(None, _features(), _proposals(), None)
    with pytest.raises(ValueError, match="targets"):
        model(None, _features(), _proposals(), _targets([1]))
    with pytest.raises(ValueError, match="proposal_boxes"):
        model(None, _features(), [Instances((H, W))] * 2, _targets([1, 1]))


def test_inference_and_forward_with_given_boxes():
    model = _build().eval()
    with torch.no_grad():
        out, losses = model(None, _features(), _proposals())
    assert losses == {}
    for inst in out:
        assert inst.image_size == (H, W)
        n = len(inst)
        assert inst.pred_masks.shape == (n, 1, 14, 14)
        assert inst.pred_keypoints.shape == (n, NUM_KP, 3)
        assert ((inst.pred_masks >= 0) & (inst.pred_masks <= 1)).all()
    given = [
        Instances(
            (H, W), pred_boxes=Boxes(torch.tensor([[5.0, 5.0, 40.0, 30.0]])), pred_classes=torch.tensor([1])
        )
    ]
    with torch.no_grad():
        res = model.forward_with_given_boxes({k: v[:1] for k, v in _features().items()}, given)
    assert res[0].pred_masks.shape == (1, 1, 14, 14)
    with pytest.raises(ValueError, match="pred_classes"):
        model.forward_with_given_boxes(_features(), [Instances((H, W), pred_boxes=Boxes(torch.zeros(1, 4)))])
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_with_given_boxes(_features(), given)


def test_built_from_config_trains():
    cfg = StandardROIHeadsConfig.base_rcnn_fpn(mask_on=True, num_classes=NUM_CLASSES)
    cfg = dataclasses.replace(
        cfg,
        in_features=tuple(IN_FEATURES),
        batch_size_per_image=32,
        box_head=dataclasses.replace(cfg.box_head, fc_dim=16),
        mask_head=dataclasses.replace(cfg.mask_head, conv_dim=8, num_conv=1),
        keypoint_on=True,
        keypoint_head=dataclasses.replace(cfg.keypoint_head, num_keypoints=NUM_KP, conv_dims=(8,)),
    )
    shapes = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
    model = build_component("roi_heads", "StandardROIHeads", cfg, shapes).train()
    assert model.box_predictor.num_classes == NUM_CLASSES
    assert model.mask_head.predictor.out_channels == NUM_CLASSES
    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([2, 1]))
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)


def _res5(mask: bool = True, norm: str = "FrozenBN"):
    from detcore.heads.roi_heads import Res5ROIHeads, Res5ROIHeadsConfig

    cfg = Res5ROIHeadsConfig(
        num_classes=NUM_CLASSES,
        batch_size_per_image=32,
        pooler_resolution=6,
        width_per_group=2,
        res2_out_channels=4,
        norm=norm,
        mask_on=mask,
        mask_head=dataclasses.replace(Res5ROIHeadsConfig().mask_head, conv_dim=8),
    )
    torch.manual_seed(0)
    model = build_component("roi_heads", "Res5ROIHeads", cfg, {"res4": ShapeSpec(channels=16, stride=16)})
    assert isinstance(model, Res5ROIHeads)
    return model


def _res4(n: int = 2) -> dict[str, torch.Tensor]:
    return {"res4": torch.randn(n, 16, H // 16, W // 16, generator=torch.Generator().manual_seed(5))}


def test_res5_roi_heads_structure_training_and_inference():
    model = _res5(norm="")
    names = set(model.state_dict())
    assert {"res5.0.conv1.weight", "res5.0.shortcut.weight", "res5.2.conv3.weight"} <= names
    assert {
        "box_predictor.cls_score.weight",
        "mask_head.deconv.weight",
        "mask_head.predictor.weight",
    } <= names
    assert model.box_predictor.cls_score.in_features == 32  # res2_out_channels * 8
    model.train()
    torch.manual_seed(0)
    out, losses = model(None, _res4(), _proposals(), _targets([2, 1]))
    assert out == [] and set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    torch.manual_seed(0)
    _, losses = model(None, _res4(), _proposals(), _targets([0, 0]))
    assert losses["loss_mask"].detach().item() == 0.0 and torch.isfinite(losses["loss_cls"])
    targets = _targets([1, 1])
    targets[0].remove("gt_masks")
    with pytest.raises(ValueError, match=r"gt_masks.*mask head"):
        model(None, _res4(), _proposals(), targets)
    model.eval()
    with torch.no_grad():
        inst, losses = model(None, _res4(), _proposals())
    assert losses == {}
    for i in inst:
        assert i.pred_masks.shape == (len(i), 1, 6, 6)  # 6 -> res5 (stride 2) 3 -> deconv 6
    with pytest.raises(ValueError, match="exactly one"):
        type(model)(
            in_features=["res4", "res5"],
            pooler=model.pooler,
            res5=model.res5,
            box_predictor=model.box_predictor,
            num_classes=NUM_CLASSES,
            batch_size_per_image=8,
            positive_fraction=0.25,
            proposal_matcher=Matcher([0.5], [0, 1]),
        )


def test_images_without_proposals():
    model = _build()
    props = _proposals()
    props[1] = props[1][torch.zeros(len(props[1]), dtype=torch.bool)]  # no proposals in image 1
    torch.manual_seed(0)
    sampled, losses = model(None, _features(), props, _targets([2, 1]))
    assert len(sampled[1]) == 1  # only its appended gt box
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)
    model.eval()
    with torch.no_grad():
        out, _ = model(None, _features(), props)
    assert len(out[1]) == 0
    assert out[1].pred_masks.shape == (0, 1, 14, 14) and out[1].pred_keypoints.shape == (0, NUM_KP, 3)
