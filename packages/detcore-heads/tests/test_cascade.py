"""CascadeROIHeads: detectron2 state-dict names, per-stage matching and losses with gradients, inference
scores averaged over the stages (recomputed by hand from the three predictors), gradient scaling."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from detcore.heads import Box2BoxTransform, Matcher, ROIPooler
from detcore.heads.build import build_component
from detcore.heads.roi_heads import (
    CascadeROIHeads,
    CascadeROIHeadsConfig,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    MaskRCNNConvUpsampleHead,
    fast_rcnn_inference,
)
from detcore.heads.roi_heads.cascade_rcnn import _ScaleGradient
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, Instances, PolygonMasks, pairwise_iou

H, W = 64, 96
NUM_CLASSES = 3
IN_FEATURES = ["p2", "p3"]
SCALES = [1 / 4, 1 / 8]
WEIGHTS = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]
IOUS = [0.5, 0.6, 0.7]


def _build(mask: bool = True, **pred_kw) -> CascadeROIHeads:
    torch.manual_seed(0)
    heads, preds = [], []
    for w in WEIGHTS:
        head = FastRCNNConvFCHead(ShapeSpec(channels=8, height=4, width=4), conv_dims=[], fc_dims=[16, 16])
        pred = FastRCNNOutputLayers(
            head.output_shape,
            box2box_transform=Box2BoxTransform(weights=w),
            num_classes=NUM_CLASSES,
            cls_agnostic_bbox_reg=True,
            **pred_kw,
        )
        # larger weights than the default init, so the stages differ visibly
        torch.nn.init.normal_(pred.cls_score.weight, std=0.5)
        torch.nn.init.normal_(pred.bbox_pred.weight, std=0.2)
        heads.append(head)
        preds.append(pred)
    extra = {}
    if mask:
        extra = dict(
            mask_in_features=IN_FEATURES,
            mask_pooler=ROIPooler(7, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
            mask_head=MaskRCNNConvUpsampleHead(ShapeSpec(channels=8), num_classes=NUM_CLASSES, conv_dims=[8]),
        )
    return CascadeROIHeads(
        num_classes=NUM_CLASSES,
        batch_size_per_image=32,
        positive_fraction=0.25,
        proposal_matchers=[Matcher([iou], [0, 1], allow_low_quality_matches=False) for iou in IOUS],
        box_in_features=IN_FEATURES,
        box_pooler=ROIPooler(4, SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"),
        box_heads=heads,
        box_predictors=preds,
        **extra,
    ).train()


def _features(n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "p2": torch.randn(n, 8, H // 4, W // 4, generator=g),
        "p3": torch.randn(n, 8, H // 8, W // 8, generator=g),
    }


def _proposals(n_img: int = 2, n: int = 30, seed: int = 2) -> list[Instances]:
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


def _targets(num_per_image) -> list[Instances]:
    g = torch.Generator().manual_seed(3)
    out = []
    for n in num_per_image:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0])
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 15], dim=1)
        polys = [
            [torch.tensor([b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]], dtype=torch.float64).numpy()]
            for b in boxes.tolist()
        ]
        out.append(
            Instances(
                (H, W),
                gt_boxes=Boxes(boxes),
                gt_classes=torch.randint(0, NUM_CLASSES, (n,), generator=g),
                gt_masks=PolygonMasks(polys),
            )
        )
    return out


_LOSS_KEYS = {f"loss_{n}_stage{k}" for n in ("cls", "box_reg") for k in range(3)} | {"loss_mask"}


def _reference(reference_dir, name):
    path = reference_dir / "detectron2-state-dicts" / f"{name}.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found (the reference data must be beside the checkout)")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.startswith("roi_heads."):
            continue
        key, shape, _ = line.split("\t")
        out[key[len("roi_heads.") :]] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return out


def test_state_dict_matches_detectron2(reference_dir):
    expected = _reference(reference_dir, "cascade_mask_rcnn_R_50_FPN")
    shapes = {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 7)}
    with torch.device("meta"):
        model = build_component(
            "roi_heads", "CascadeROIHeads", CascadeROIHeadsConfig.base_rcnn_fpn(mask_on=True), shapes
        )
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert model.num_cascade_stages == 3
    assert [m.thresholds[1] for m in model.proposal_matchers] == IOUS
    assert [p.box2box_transform.weights for p in model.box_predictor] == WEIGHTS


def test_config_defaults_and_errors():
    cfg = CascadeROIHeadsConfig()
    assert cfg.cascade_ious == (0.5, 0.6, 0.7)
    assert cfg.cascade_bbox_reg_weights == tuple(WEIGHTS)
    assert cfg.box_predictor.cls_agnostic_bbox_reg
    shapes = {"res4": ShapeSpec(channels=8, stride=16)}
    bad = CascadeROIHeadsConfig(cascade_ious=(0.5, 0.6))
    with pytest.raises(ValueError, match="cascade_ious"):
        CascadeROIHeads.from_config(bad, shapes)
    bad = CascadeROIHeadsConfig(cascade_ious=(0.4, 0.6, 0.7))
    with pytest.raises(ValueError, match="iou_thresholds"):
        CascadeROIHeads.from_config(bad, shapes)
    bad = CascadeROIHeadsConfig(box_predictor=CascadeROIHeadsConfig().box_predictor.__class__())
    with pytest.raises(ValueError, match="cls_agnostic_bbox_reg"):
        CascadeROIHeads.from_config(bad, shapes)
    model = _build(mask=False)
    with pytest.raises(ValueError, match="proposal_matchers"):
        CascadeROIHeads(
            num_classes=NUM_CLASSES,
            batch_size_per_image=8,
            positive_fraction=0.25,
            proposal_matchers=list(model.proposal_matchers[:2]),
            box_in_features=IN_FEATURES,
            box_pooler=model.box_pooler,
            box_heads=list(model.box_head),
            box_predictors=list(model.box_predictor),
        )


def _check_losses_and_grads(model, losses, expect_nonzero_grads: bool) -> None:
    assert set(losses) == _LOSS_KEYS
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), (k, v)
    model.zero_grad()
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if expect_nonzero_grads:
            assert p.grad.abs().sum() > 0, name


def test_training_several_instances_losses_and_gradients():
    model = _build()
    torch.manual_seed(0)
    proposals, losses = model(None, _features(), _proposals(), _targets([3, 2]))
    assert len(proposals) == 2 and all(len(p) <= 32 for p in proposals)
    for k in range(3):
        assert losses[f"loss_cls_stage{k}"] > 0
        assert losses[f"loss_box_reg_stage{k}"] > 0  # gt boxes appended: every stage has foreground
    assert losses["loss_mask"] > 0
    _check_losses_and_grads(model, losses, expect_nonzero_grads=True)


def test_training_one_and_zero_instances():
    model = _build()
    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([1, 0]))
    _check_losses_and_grads(model, losses, expect_nonzero_grads=True)

    torch.manual_seed(0)
    _, losses = model(None, _features(), _proposals(), _targets([0, 0]))
    for k in range(3):
        assert losses[f"loss_box_reg_stage{k}"].item() == 0.0
        assert losses[f"loss_cls_stage{k}"] > 0
    assert losses["loss_mask"].item() == 0.0
    _check_losses_and_grads(model, losses, expect_nonzero_grads=False)


def test_later_stages_match_refined_boxes_with_their_own_iou():
    """Stage k > 0 sees the previous stage's detached, clipped boxes (all of them, unsampled) labelled by
    its own matcher; checked by recording each stage's proposals."""
    model = _build(mask=False)
    features, proposals, targets = _features(), _proposals(), _targets([3, 2])
    seen = []
    orig = model._run_stage

    def record(feats, props, stage):
        seen.append([Instances(p.image_size, **p.get_fields()) for p in props])
        return orig(feats, props, stage)

    model._run_stage = record
    torch.manual_seed(0)
    sampled, _ = model(None, features, proposals, targets)
    assert len(seen) == 3
    for stage in (1, 2):
        prev = seen[stage - 1]
        with torch.no_grad():
            feats = [features[f] for f in IN_FEATURES]
            preds = model.box_predictor[stage - 1](
                model.box_head[stage - 1](model.box_pooler(feats, [p.proposal_boxes for p in prev]))
            )
            boxes = model.box_predictor[stage - 1].predict_boxes(preds, prev)
        for props, b, t in zip(seen[stage], boxes, targets):
            b = b.clone()
            b[:, 0::2] = b[:, 0::2].clamp(0, W)
            b[:, 1::2] = b[:, 1::2].clamp(0, H)
            b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
            torch.testing.assert_close(props.proposal_boxes.tensor, b)
            assert not props.proposal_boxes.tensor.requires_grad
            iou = pairwise_iou(t.gt_boxes, props.proposal_boxes)
            best, idx = iou.max(dim=0)
            expected = torch.where(best >= IOUS[stage], t.gt_classes[idx], torch.tensor(NUM_CLASSES))
            assert torch.equal(props.gt_classes, expected)
    assert len(seen[0][0]) == len(sampled[0])


def test_inference_scores_are_averaged_over_stages():
    model = _build(mask=False, test_score_thresh=0.0, test_nms_thresh=0.5, test_topk_per_image=-1).eval()
    features = _features(1)
    proposals = _proposals(1, n=6)
    with torch.no_grad():
        out, losses = model(None, features, proposals)
    assert losses == {}
    # by hand, in float64, from the three predictors
    feats = [features[f].double() for f in IN_FEATURES]
    boxes = proposals[0].proposal_boxes.tensor.double()
    probs = []
    with torch.no_grad():
        for k in range(3):
            head = model.box_head[k].double()
            pred = model.box_predictor[k].double()
            x = head(model.box_pooler(feats, [Boxes(boxes)]))
            logits, deltas = pred(x)
            probs.append(F.softmax(logits, dim=-1))
            boxes = pred.box2box_transform.apply_deltas(deltas, boxes)
            if k < 2:
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
        model.float()
    avg = (probs[0] + probs[1] + probs[2]) / 3
    assert not torch.allclose(probs[0], probs[2], atol=1e-3)  # the average differs from any one stage
    expected, _ = fast_rcnn_inference([boxes], [avg], [(H, W)], 0.0, 0.5, -1)
    got, exp = out[0], expected[0]
    assert len(got) == len(exp) > 0
    torch.testing.assert_close(got.scores, exp.scores.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.pred_boxes.tensor, exp.pred_boxes.tensor.float(), rtol=1e-4, atol=1e-3)
    assert torch.equal(got.pred_classes, exp.pred_classes)


def test_inference_with_mask_branch():
    model = _build().eval()
    with torch.no_grad():
        out, _ = model(None, _features(), _proposals())
    assert len(out) == 2
    for inst in out:
        assert inst.has("pred_masks") and inst.pred_masks.shape[1:] == (1, 14, 14)
        assert (inst.scores <= 1).all() and (inst.scores > 0.05).all()


def test_scale_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = _ScaleGradient.apply(x, 0.25)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 4), 0.5))


def test_built_from_config_trains_and_infers():
    import dataclasses

    from detcore.heads.roi_heads import FastRCNNConvFCHeadConfig, MaskRCNNConvUpsampleHeadConfig

    cfg = dataclasses.replace(
        CascadeROIHeadsConfig(),
        num_classes=NUM_CLASSES,
        in_features=("p2", "p3"),
        batch_size_per_image=32,
        box_pooler_resolution=4,
        box_head=FastRCNNConvFCHeadConfig(num_fc=2, fc_dim=16),
        mask_on=True,
        mask_pooler_resolution=7,
        mask_head=MaskRCNNConvUpsampleHeadConfig(num_conv=1, conv_dim=8),
    )
    shapes = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
    torch.manual_seed(0)
    model = build_component("roi_heads", "CascadeROIHeads", cfg, shapes).train()
    assert [p.bbox_pred.out_features for p in model.box_predictor] == [4, 4, 4]
    _, losses = model(None, _features(), _proposals(), _targets([2, 1]))
    _check_losses_and_grads(model, losses, expect_nonzero_grads=True)
    model.eval()
    with torch.no_grad():
        out, _ = model(None, _features(), _proposals())
    assert len(out) == 2 and all(inst.has("pred_masks") for inst in out)


def test_stage_gradient_into_features_is_scaled_by_one_over_num_stages():
    model = _build(mask=False)
    feats = {k: v.requires_grad_(True) for k, v in _features().items()}
    torch.manual_seed(0)
    sampled, losses = model(None, feats, _proposals(), _targets([3, 2]))
    (losses["loss_cls_stage0"] + losses["loss_box_reg_stage0"]).backward()
    got = [feats[f].grad.clone() for f in IN_FEATURES]
    # the same stage-0 loss without the cascade's gradient scaling
    feats2 = {k: v.detach().clone().requires_grad_(True) for k, v in feats.items()}
    x = model.box_pooler([feats2[f] for f in IN_FEATURES], [p.proposal_boxes for p in sampled])
    stage0 = model.box_predictor[0].losses(model.box_predictor[0](model.box_head[0](x)), sampled)
    (stage0["loss_cls"] + stage0["loss_box_reg"]).backward()
    assert got[0].abs().sum() > 0  # (these small boxes are all pooled from p2)
    for g, f in zip(got, IN_FEATURES):
        torch.testing.assert_close(g, feats2[f].grad / 3, rtol=1e-5, atol=1e-7)
