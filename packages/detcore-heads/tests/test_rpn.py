from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from detcore.heads import (
    RPN,
    Box2BoxTransform,
    DefaultAnchorGenerator,
    Matcher,
    RPNConfig,
    StandardRPNHead,
    StandardRPNHeadConfig,
    build_proposal_generator,
    find_top_rpn_proposals,
)
from detcore.ops import ShapeSpec
from detcore.structures import Boxes, ImageList, Instances, pairwise_iou

LEVELS = ["p2", "p3", "p4", "p5", "p6"]


def _fpn_shapes(channels: int) -> dict[str, ShapeSpec]:
    return {f"p{i}": ShapeSpec(channels=channels, stride=2**i) for i in range(2, 7)}


def _load_rpn_from_golden(golden) -> RPN:
    rpn = RPN.build(RPNConfig.base_rcnn_fpn(), _fpn_shapes(64))
    state = torch.load(golden / "model.pth", map_location="cpu", weights_only=True)
    prefix = "proposal_generator."
    rpn.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return rpn.eval()


@pytest.fixture(scope="module")
def golden(reference_dir):
    path = reference_dir / "golden" / "mask_rcnn_tiny"
    if not (path / "model.pth").exists():
        pytest.fail("golden mask_rcnn_tiny data not found beside the checkout")
    return path


def test_state_dict_names_match_detectron2(reference_dir):
    rpn = RPN.build(RPNConfig.base_rcnn_fpn(), _fpn_shapes(256))
    ours = {f"proposal_generator.{k}": list(v.shape) for k, v in rpn.state_dict().items()}
    expected = {}
    for line in (reference_dir / "detectron2-state-dicts" / "rpn_R_50_FPN.txt").read_text().splitlines():
        if line.startswith("proposal_generator."):
            name, shape, _ = line.split("\t")
            expected[name] = [int(s) for s in shape.strip("[]").split(",")]
    assert ours == expected
    # several hidden convs use conv.conv{k}
    head = StandardRPNHead(in_channels=8, num_anchors=3, conv_dims=[16, -1])
    assert sorted(head.state_dict()) == sorted(
        [f"conv.conv{k}.{p}" for k in (0, 1) for p in ("weight", "bias")]
        + [f"{n}.{p}" for n in ("objectness_logits", "anchor_deltas") for p in ("weight", "bias")]
    )
    assert head.objectness_logits.in_channels == 16
    # initialisation: N(0, 0.01) weights, zero biases
    assert all(
        float(m.bias.detach().abs().max()) == 0.0 for m in head.modules() if isinstance(m, torch.nn.Conv2d)
    )


def test_golden_head_and_proposals(golden):
    rpn = _load_rpn_from_golden(golden)
    checked = 0
    for npz in sorted(golden.glob("*.npz")):
        data = np.load(npz)
        if not all(f"features/{lvl}" in data.files for lvl in LEVELS):
            continue  # blank_flat stores only p5 and p6
        feats = {lvl: torch.from_numpy(data[f"features/{lvl}"])[None] for lvl in LEVELS}
        h, w = (int(x) for x in data["image_size_resized"])
        images = ImageList(torch.zeros(1, 3, *(int(x) for x in data["preprocessed_shape"][2:])), [(h, w)])
        with torch.no_grad():
            if "rpn/objectness_logits/p2" in data.files:
                logits, deltas = rpn.rpn_head([feats[lvl] for lvl in LEVELS])
                for lvl, lo, de in zip(LEVELS, logits, deltas):
                    ref_lo = torch.from_numpy(data[f"rpn/objectness_logits/{lvl}"])
                    ref_de = torch.from_numpy(data[f"rpn/anchor_deltas/{lvl}"])
                    torch.testing.assert_close(lo[0], ref_lo, atol=5e-4, rtol=0)
                    torch.testing.assert_close(de[0], ref_de, atol=2e-4, rtol=0)
            proposals, losses = rpn(images, feats)
        assert losses == {}
        assert len(proposals) == 1 and proposals[0].image_size == (h, w)
        boxes = proposals[0].proposal_boxes.tensor
        logits = proposals[0].objectness_logits
        ref_boxes = torch.from_numpy(data["proposals/boxes"])
        ref_logits = torch.from_numpy(data["proposals/objectness_logits"])
        assert boxes.shape == ref_boxes.shape, npz.name
        # as sets: every stored proposal has one of ours within 1e-2 px (and vice versa)
        dist = torch.cdist(ref_boxes.double(), boxes.double(), p=float("inf"))
        assert float(dist.min(dim=1).values.max()) < 1e-2, npz.name
        assert float(dist.min(dim=0).values.max()) < 1e-2, npz.name
        # in order, up to a few swaps of near-equal logits
        same = ((boxes - ref_boxes).abs().max(dim=1).values < 1e-2).float().mean()
        assert float(same) >= 0.99, npz.name
        torch.testing.assert_close(logits, ref_logits, atol=5e-4, rtol=0)
        assert (logits[:-1] >= logits[1:]).all()
        checked += 1
    assert checked == 7


def _small_rpn(channels: int = 8, **kwargs) -> RPN:
    cfg = RPNConfig.base_rcnn_fpn()
    rpn = RPN.build(cfg, _fpn_shapes(channels))
    for k, v in kwargs.items():
        setattr(rpn, k, v)
    return rpn


def _small_inputs(batch: int, seed: int = 0, channels: int = 8, size=(64, 96)):
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    feats = {
        f"p{i}": torch.randn(batch, channels, -(-h // 2**i), -(-w // 2**i), generator=gen)
        for i in range(2, 7)
    }
    images = ImageList(torch.zeros(batch, 3, h, w), [(h, w - 8 * k) for k in range(batch)])
    return images, feats


def _gt(image_size, boxes) -> Instances:
    inst = Instances(image_size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    return inst


@pytest.mark.parametrize("num_gt", [3, 1, 0])
def test_training_losses_and_gradients(num_gt):
    torch.manual_seed(0)
    rpn = _small_rpn()
    # non-zero weights so that every parameter gets a non-trivial gradient
    for p in rpn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    rpn.train()
    images, feats = _small_inputs(2)
    all_boxes = [[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 80.0, 30.0], [50.0, 40.0, 60.0, 58.0]]
    gts = [_gt(images.image_sizes[i], all_boxes[:num_gt]) for i in range(2)]
    proposals, losses = rpn(images, feats, gts)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(proposals) == 2 and all(len(p) <= 1000 for p in proposals)
    assert not proposals[0].proposal_boxes.tensor.requires_grad
    sum(losses.values()).backward()
    for name, p in rpn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if num_gt > 0 or not name.startswith("rpn_head.anchor_deltas"):
            assert p.grad.abs().sum() > 0, name
    if num_gt == 0:
        assert float(losses["loss_rpn_loc"].detach()) == 0.0


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou"])
def test_training_with_iou_losses(loss_type):
    torch.manual_seed(0)
    rpn = _small_rpn()
    for p in rpn.parameters():
        torch.nn.init.normal_(p, std=0.05)
    rpn.box_reg_loss_type = loss_type
    rpn.train()
    images, feats = _small_inputs(1, seed=4)
    gts = [_gt(images.image_sizes[0], [[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 80.0, 30.0]])]
    _, losses = rpn(images, feats, gts)
    assert torch.isfinite(losses["loss_rpn_loc"]) and float(losses["loss_rpn_loc"].detach()) > 0
    losses["loss_rpn_loc"].backward()
    assert rpn.rpn_head.anchor_deltas.weight.grad.abs().sum() > 0


def test_anchor_boundary_thresh_ignores_outside_anchors():
    rpn = _small_rpn()
    rpn.anchor_boundary_thresh = 0
    images, feats = _small_inputs(1, seed=5)
    feat_list = [feats[f] for f in LEVELS]
    anchors = rpn.anchor_generator(feat_list)
    gts = [_gt(images.image_sizes[0], [[5.0, 6.0, 40.0, 50.0]])]
    torch.manual_seed(0)
    (labels,), _ = rpn.label_and_sample_anchors(anchors, gts)
    all_anchors = Boxes.cat(anchors)
    inside = all_anchors.inside_box(images.image_sizes[0], 0)
    assert (~inside).any() and (labels[~inside] == -1).all()
    assert (labels[inside] >= 0).sum() > 0


def test_losses_match_reference():
    torch.manual_seed(0)
    rpn = _small_rpn()
    for p in rpn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    rpn.train()
    images, feats = _small_inputs(2, seed=1)
    gts = [_gt(s, [[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 80.0, 30.0]]) for s in images.image_sizes]
    feat_list = [feats[f] for f in LEVELS]
    anchors = rpn.anchor_generator(feat_list)
    torch.manual_seed(5)
    gt_labels, gt_boxes = rpn.label_and_sample_anchors(anchors, gts)
    all_anchors = Boxes.cat(anchors).tensor
    for labels, matched, inst in zip(gt_labels, gt_boxes, gts):
        assert labels.dtype == torch.int8
        num_pos, num_neg = int((labels == 1).sum()), int((labels == 0).sum())
        assert 0 < num_pos <= 128 and num_pos + num_neg == 256
        iou = pairwise_iou(inst.gt_boxes, Boxes(all_anchors))
        best = iou.max(dim=0).values
        pos = labels == 1
        # positives: IoU >= 0.7 or the best anchor of some gt; negatives: IoU < 0.3
        best_for_gt = (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
        assert ((best[pos] >= 0.7) | best_for_gt[pos]).all()
        assert (best[labels == 0] < 0.3).all()
        torch.testing.assert_close(matched[pos], inst.gt_boxes.tensor[iou.argmax(dim=0)][pos])
    logits, deltas = rpn.rpn_head(feat_list)
    logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
    deltas = [x.view(x.shape[0], 3, 4, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas]
    losses = rpn.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    # reference, float64
    labels = torch.stack(gt_labels).double()
    lo = torch.cat(logits, dim=1).double()
    valid = labels >= 0
    bce = -(labels * F.logsigmoid(lo) + (1 - labels) * F.logsigmoid(-lo))[valid].sum() / (256 * 2)
    torch.testing.assert_close(losses["loss_rpn_cls"].double(), bce, rtol=1e-5, atol=1e-7)
    t = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    target = torch.stack([t.get_deltas(all_anchors.double(), g.double()) for g in gt_boxes])
    pred = torch.cat(deltas, dim=1).double()
    l1 = (pred - target).abs()[labels == 1].sum() / (256 * 2)
    torch.testing.assert_close(losses["loss_rpn_loc"].double(), l1, rtol=1e-5, atol=1e-7)
    # loss weights
    rpn.loss_weight = {"loss_rpn_cls": 2.0, "loss_rpn_loc": 0.5}
    weighted = rpn.losses(anchors, logits, gt_labels, deltas, gt_boxes)
    torch.testing.assert_close(weighted["loss_rpn_cls"], 2.0 * losses["loss_rpn_cls"])
    torch.testing.assert_close(weighted["loss_rpn_loc"], 0.5 * losses["loss_rpn_loc"])


def test_predict_proposals_equals_full_decode():
    torch.manual_seed(0)
    rpn = _small_rpn()
    for p in rpn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    images, feats = _small_inputs(3, seed=2)
    feat_list = [feats[f] for f in LEVELS]
    anchors = rpn.anchor_generator(feat_list)
    with torch.no_grad():
        logits, deltas = rpn.rpn_head(feat_list)
    logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
    deltas = [x.view(x.shape[0], 3, 4, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas]
    for training, pre, post, min_size in [(False, 50, 40, 0.0), (True, 1000, 1000, 3.0)]:
        rpn.train(training)
        rpn.pre_nms_topk[training] = pre
        rpn.post_nms_topk[training] = post
        rpn.min_box_size = min_size
        ours = rpn.predict_proposals(anchors, logits, deltas, images.image_sizes)
        ref = find_top_rpn_proposals(
            rpn._decode_proposals(anchors, deltas),
            logits,
            images.image_sizes,
            0.7,
            pre,
            post,
            min_size,
            training,
        )
        for a, b, size in zip(ours, ref, images.image_sizes):
            assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
            assert torch.equal(a.objectness_logits, b.objectness_logits)
            t = a.proposal_boxes.tensor
            assert len(t) <= post
            assert (t[:, 0] >= 0).all() and (t[:, 2] <= size[1]).all() and (t[:, 3] <= size[0]).all()
            assert ((t[:, 2] - t[:, 0]) > min_size).all() and ((t[:, 3] - t[:, 1]) > min_size).all()


def test_eval_forward_equals_predict_proposals():
    # eval forward gathers the top-k deltas from the head's [N, A*4, H, W] layout
    torch.manual_seed(0)
    rpn = _small_rpn()
    for p in rpn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    rpn.eval()
    images, feats = _small_inputs(3, seed=3)
    rpn.pre_nms_topk[False] = 30
    with torch.no_grad():
        proposals, _ = rpn(images, feats)
        feat_list = [feats[f] for f in LEVELS]
        logits, deltas = rpn.rpn_head(feat_list)
    logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
    deltas = [x.view(x.shape[0], 3, 4, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas]
    anchors = rpn.anchor_generator(feat_list)
    ref = find_top_rpn_proposals(
        rpn._decode_proposals(anchors, deltas), logits, images.image_sizes, 0.7, 30, 1000, 0.0, False
    )
    for a, b in zip(proposals, ref):
        assert len(a) > 0
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)


def test_find_top_rpn_proposals_hand_case():
    # two levels, one image: level 0 has two overlapping boxes (NMS keeps the better), level 1 repeats the
    # first box (different level: not suppressed), one box is empty after clipping, one is non-finite.
    proposals = [
        torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [200.0, 200.0, 210.0, 210.0]]]),
        torch.tensor([[[0.0, 0.0, 10.0, 10.0], [float("nan"), 0.0, 1.0, 1.0]]]),
    ]
    logits = [torch.tensor([[3.0, 2.0, 5.0]]), torch.tensor([[1.0, 9.0]])]
    (res,) = find_top_rpn_proposals(proposals, logits, [(100, 100)], 0.7, 10, 10, 0.0, False)
    assert res.objectness_logits.tolist() == [3.0, 1.0]
    assert res.proposal_boxes.tensor.tolist() == [[0.0, 0.0, 10.0, 10.0]] * 2
    with pytest.raises(FloatingPointError):
        find_top_rpn_proposals(proposals, logits, [(100, 100)], 0.7, 10, 10, 0.0, True)
    # pre-NMS top-1 per level
    (res,) = find_top_rpn_proposals(proposals[:1], logits[:1], [(300, 300)], 0.7, 1, 10, 0.0, False)
    assert res.objectness_logits.tolist() == [5.0]
    # every box outside the image: no proposals
    outside = [torch.tensor([[[200.0, 200.0, 210.0, 210.0], [-20.0, 0.0, -5.0, 30.0]]])]
    (res,) = find_top_rpn_proposals(
        outside, [torch.tensor([[1.0, 2.0]])], [(100, 100)], 0.7, 10, 10, 0.0, False
    )
    assert len(res) == 0 and res.proposal_boxes.tensor.shape == (0, 4)


def test_config_defaults_and_registry():
    cfg = RPNConfig()
    assert cfg.in_features == ("res4",)
    assert (
        cfg.pre_nms_topk_train,
        cfg.pre_nms_topk_test,
        cfg.post_nms_topk_train,
        cfg.post_nms_topk_test,
    ) == (
        12000,
        6000,
        2000,
        1000,
    )
    assert cfg.iou_thresholds == (0.3, 0.7) and cfg.iou_labels == (0, -1, 1)
    assert cfg.batch_size_per_image == 256 and cfg.positive_fraction == 0.5 and cfg.nms_thresh == 0.7
    assert cfg.head == StandardRPNHeadConfig() and cfg.head.conv_dims == (-1,)
    with pytest.raises(AttributeError):
        cfg.nms_thresh = 0.5  # type: ignore[misc]
    fpn = RPNConfig.base_rcnn_fpn()
    assert (fpn.pre_nms_topk_train, fpn.pre_nms_topk_test, fpn.post_nms_topk_train) == (2000, 1000, 1000)
    rpn = build_proposal_generator(RPNConfig(), {"res4": ShapeSpec(channels=16, stride=16)})
    assert isinstance(rpn, RPN)
    assert isinstance(rpn.anchor_generator, DefaultAnchorGenerator)
    assert rpn.anchor_generator.num_anchors == [15]
    assert rpn.rpn_head.objectness_logits.out_channels == 15
    assert rpn.pre_nms_topk == {True: 12000, False: 6000}
    assert isinstance(rpn.anchor_matcher, Matcher) and rpn.anchor_matcher.allow_low_quality_matches
    assert build_proposal_generator(RPNConfig(), {}, name="PrecomputedProposals") is None
    from detcore.plugins import get_component

    assert get_component("proposal_generator", "RPN") is RPN
    assert get_component("rpn_head", "StandardRPNHead") is StandardRPNHead
    assert get_component("anchor_generator", "DefaultAnchorGenerator") is DefaultAnchorGenerator
    with pytest.raises(ValueError, match="in_features"):
        RPN.build(RPNConfig(), {"p2": ShapeSpec(channels=16, stride=4)})


def test_bad_inputs():
    rpn = _small_rpn().train()
    images, feats = _small_inputs(1)
    with pytest.raises(ValueError, match="gt_instances"):
        rpn(images, feats)
    with pytest.raises(ValueError, match="p6"):
        rpn(images, {k: v for k, v in feats.items() if k != "p6"})
    with pytest.raises(ValueError, match="image sizes"):
        rpn.eval()(ImageList(images.tensor, images.image_sizes * 2), feats)
    with pytest.raises(ValueError, match="num_anchors"):
        StandardRPNHead.from_config(None, [ShapeSpec(channels=4)] * 2, num_anchors=[3, 4])
    with pytest.raises(ValueError, match="box_reg_loss_type"):
        RPN(
            in_features=["p2"],
            head=rpn.rpn_head,
            anchor_generator=rpn.anchor_generator,
            anchor_matcher=rpn.anchor_matcher,
            box2box_transform=rpn.box2box_transform,
            box_reg_loss_type="l2",
        )
