"""ROI heads: proposal labelling and sampling, and the box / mask / keypoint branches (detectron2's
``ROIHeads`` and ``StandardROIHeads``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detcore.heads._config import as_tuple
from detcore.heads.build import build_component
from detcore.heads.matcher import Matcher
from detcore.heads.poolers import ROIPooler
from detcore.heads.roi_heads.box_head import FastRCNNConvFCHeadConfig
from detcore.heads.roi_heads.fast_rcnn import FastRCNNOutputLayers, FastRCNNOutputLayersConfig
from detcore.heads.roi_heads.keypoint_head import KRCNNConvDeconvUpsampleHeadConfig
from detcore.heads.roi_heads.mask_head import MaskRCNNConvUpsampleHeadConfig
from detcore.heads.sampling import subsample_labels
from detcore.ops import ShapeSpec, nonzero_tuple
from detcore.structures import Boxes, ImageList, Instances, pairwise_iou

__all__ = [
    "ROIHeads",
    "Res5ROIHeads",
    "Res5ROIHeadsConfig",
    "StandardROIHeads",
    "StandardROIHeadsConfig",
    "add_ground_truth_to_proposals",
    "select_foreground_proposals",
    "select_proposals_with_visible_keypoints",
]

# logit of a probability of 1 - 1e-10: ground-truth boxes appended to the proposals are "certain"
_GT_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))


def add_ground_truth_to_proposals(
    gt: Sequence[Instances] | Sequence[Boxes], proposals: Sequence[Instances]
) -> list[Instances]:
    """Append each image's ground-truth boxes to its proposals (``proposal_boxes`` = ``gt_boxes``, and
    ``objectness_logits`` of a near-certain probability when the proposals have logits).

    Args:
        gt (list[Instances] | list[Boxes]): per image, targets with ``gt_boxes``, or the boxes.
        proposals (list[Instances]): per image, proposals with ``proposal_boxes`` (and ``objectness_logits``).
    """
    if gt is None or len(gt) != len(proposals):
        raise ValueError(
            f"gt must have one entry per image ({len(proposals)}), got {None if gt is None else len(gt)}"
        )
    out = []
    for gt_i, proposals_i in zip(gt, proposals):
        gt_boxes = gt_i if isinstance(gt_i, Boxes) else gt_i.gt_boxes
        fields: dict[str, Any] = {"proposal_boxes": gt_boxes.to(proposals_i.proposal_boxes.device)}
        if proposals_i.has("objectness_logits"):
            logits = proposals_i.objectness_logits
            fields["objectness_logits"] = torch.full(
                (len(gt_boxes),), _GT_LOGIT, dtype=logits.dtype, device=logits.device
            )
        extra = set(proposals_i.get_fields()) - set(fields)
        if extra:
            raise ValueError(
                f"proposals may only have fields 'proposal_boxes' and 'objectness_logits' when ground truth is "
                f"appended, got also {sorted(extra)}"
            )
        gt_proposal = Instances(proposals_i.image_size, **fields)
        out.append(Instances.cat([proposals_i, gt_proposal]))
    return out


def select_foreground_proposals(
    proposals: list[Instances], bg_label: int
) -> tuple[list[Instances], list[Tensor]]:
    """Per image the proposals whose ``gt_classes`` is neither -1 nor ``bg_label``, and the boolean masks."""
    fg_proposals = []
    fg_selection_masks = []
    for proposals_per_image in proposals:
        gt_classes = proposals_per_image.gt_classes
        fg_selection_mask = (gt_classes != -1) & (gt_classes != bg_label)
        fg_idxs = nonzero_tuple(fg_selection_mask)[0]
        fg_proposals.append(proposals_per_image[fg_idxs])
        fg_selection_masks.append(fg_selection_mask)
    return fg_proposals, fg_selection_masks


def select_proposals_with_visible_keypoints(proposals: list[Instances]) -> list[Instances]:
    """Per image the proposals with at least one visible gt keypoint inside the proposal box."""
    ret = []
    for proposals_per_image in proposals:
        if len(proposals_per_image) == 0:
            ret.append(proposals_per_image)
            continue
        gt_keypoints = proposals_per_image.gt_keypoints.tensor
        vis_mask = gt_keypoints[:, :, 2] >= 1
        xs, ys = gt_keypoints[:, :, 0], gt_keypoints[:, :, 1]
        boxes = proposals_per_image.proposal_boxes.tensor.unsqueeze(dim=1)  # [N, 1, 4]
        kp_in_box = (
            (xs >= boxes[:, :, 0]) & (xs <= boxes[:, :, 2]) & (ys >= boxes[:, :, 1]) & (ys <= boxes[:, :, 3])
        )
        selection = (kp_in_box & vis_mask).any(dim=1)
        ret.append(proposals_per_image[nonzero_tuple(selection)[0]])
    return ret


class ROIHeads(nn.Module):
    """Base of the ROI heads: matches proposals to ground truth and samples them for training.

    Args:
        num_classes (int): foreground classes K (K is the background label).
        batch_size_per_image (int): sampled proposals per image.
        positive_fraction (float): maximal foreground fraction of the samples.
        proposal_matcher (Matcher): labels proposals foreground (1), background (0) or ignored (-1).
        proposal_append_gt (bool): add the ground-truth boxes to the proposals before matching.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        batch_size_per_image: int,
        positive_fraction: float,
        proposal_matcher: Matcher,
        proposal_append_gt: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if isinstance(batch_size_per_image, bool) or not isinstance(batch_size_per_image, int):
            raise ValueError(f"batch_size_per_image must be an int, got {batch_size_per_image!r}")
        if not isinstance(proposal_matcher, Matcher):
            raise TypeError(f"proposal_matcher must be a Matcher, got {type(proposal_matcher).__name__}")
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = float(positive_fraction)
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = bool(proposal_append_gt)

    def _sample_proposals(
        self, matched_idxs: Tensor, matched_labels: Tensor, gt_classes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Sample proposals; returns their indices and classes (K for background, -1 never sampled)."""
        has_gt = gt_classes.numel() > 0
        if has_gt:
            gt_classes = gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = self.num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.zeros_like(matched_idxs) + self.num_classes
        sampled_fg_idxs, sampled_bg_idxs = subsample_labels(
            gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
        )
        sampled_idxs = torch.cat([sampled_fg_idxs, sampled_bg_idxs], dim=0)
        return sampled_idxs, gt_classes[sampled_idxs]

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Match proposals (plus the gt boxes when ``proposal_append_gt``) to the targets and sample them.

        Returns:
            list[Instances]: per image the sampled proposals with ``proposal_boxes``, ``gt_classes`` and,
            when the image has ground truth, every ``gt_*`` field of the matched target (``gt_boxes``, ...).
        """
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        proposals_with_gt = []
        for proposals_per_image, targets_per_image in zip(proposals, targets):
            has_gt = len(targets_per_image) > 0
            match_quality_matrix = pairwise_iou(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(
                matched_idxs, matched_labels, targets_per_image.gt_classes
            )
            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                for trg_name, trg_value in targets_per_image.get_fields().items():
                    if trg_name.startswith("gt_") and not proposals_per_image.has(trg_name):
                        proposals_per_image.set(trg_name, trg_value[sampled_targets])
            # without gt there is no dummy value for gt_boxes etc.: only gt_classes (all background) is set
            proposals_with_gt.append(proposals_per_image)
        return proposals_with_gt

    def forward(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        raise NotImplementedError


def _check_targets(targets: Any, num_images: int, heads: Mapping[str, str]) -> None:
    """Targets must be a list of Instances (one per image) with the fields each enabled head needs."""
    if targets is None:
        raise ValueError(
            "targets must be given in training (a list of Instances with gt_boxes, gt_classes, ...)"
        )
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        raise ValueError(
            f"targets must be a list of {num_images} Instances (one per image), got "
            f"{len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__}"
        )
    for i, t in enumerate(targets):
        if not isinstance(t, Instances):
            raise TypeError(f"targets[{i}] must be Instances, got {type(t).__name__}")
        for fld, head in heads.items():
            if (fld in ("gt_boxes", "gt_classes") or len(t) > 0) and not t.has(fld):
                raise ValueError(
                    f"targets[{i}] has no field '{fld}', which the {head} needs in training "
                    f"(fields: {sorted(t.get_fields())})"
                )


@dataclass(frozen=True)
class StandardROIHeadsConfig:
    """Config of :class:`StandardROIHeads`: detectron2's ``MODEL.ROI_HEADS`` / ``ROI_BOX_HEAD`` /
    ``ROI_MASK_HEAD`` / ``ROI_KEYPOINT_HEAD`` defaults (``defaults.py``); :meth:`base_rcnn_fpn` gives
    Base-RCNN-FPN's values (with ``mask_on`` for Mask R-CNN).

    ``num_classes`` overrides the ``num_classes`` of the box predictor and mask head configs.
    """

    num_classes: int = 80
    in_features: tuple[str, ...] = ("res4",)
    iou_thresholds: tuple[float, ...] = (0.5,)
    iou_labels: tuple[int, ...] = (0, 1)
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    proposal_append_gt: bool = True
    # box branch
    box_pooler_resolution: int = 14
    box_pooler_sampling_ratio: int = 0
    box_pooler_type: str = "ROIAlignV2"
    box_head_name: str = "FastRCNNConvFCHead"
    box_head: Any = field(default_factory=FastRCNNConvFCHeadConfig)
    box_predictor: Any = field(default_factory=FastRCNNOutputLayersConfig)
    train_on_pred_boxes: bool = False
    # mask branch
    mask_on: bool = False
    mask_pooler_resolution: int = 14
    mask_pooler_sampling_ratio: int = 0
    mask_pooler_type: str = "ROIAlignV2"
    mask_head_name: str = "MaskRCNNConvUpsampleHead"
    mask_head: Any = field(default_factory=MaskRCNNConvUpsampleHeadConfig)
    # keypoint branch
    keypoint_on: bool = False
    keypoint_pooler_resolution: int = 14
    keypoint_pooler_sampling_ratio: int = 0
    keypoint_pooler_type: str = "ROIAlignV2"
    keypoint_head_name: str = "KRCNNConvDeconvUpsampleHead"
    keypoint_head: Any = field(default_factory=KRCNNConvDeconvUpsampleHeadConfig)

    def __post_init__(self) -> None:
        for name in ("in_features", "iou_thresholds", "iou_labels"):
            object.__setattr__(self, name, as_tuple(getattr(self, name), name))

    @classmethod
    def base_rcnn_fpn(cls, mask_on: bool = False, num_classes: int = 80) -> StandardROIHeadsConfig:
        """Base-RCNN-FPN: p2..p5, 7x7 box pooler, 2 fc of 1024, 4-conv mask head."""
        return cls(
            num_classes=num_classes,
            in_features=("p2", "p3", "p4", "p5"),
            box_pooler_resolution=7,
            box_head=FastRCNNConvFCHeadConfig.base_rcnn_fpn(),
            mask_on=mask_on,
            mask_head=MaskRCNNConvUpsampleHeadConfig.base_rcnn_fpn(),
        )


def _with_num_classes(cfg: Any, num_classes: int) -> Any:
    if dataclasses.is_dataclass(cfg) and any(f.name == "num_classes" for f in dataclasses.fields(cfg)):
        return dataclasses.replace(cfg, num_classes=num_classes)
    return cfg


class StandardROIHeads(ROIHeads):
    """detectron2's standard ROI heads: each branch (box, mask, keypoint) pools its features from the
    proposals (box branch) or the sampled foreground proposals / detections (mask, keypoint) and runs its head.

    State-dict names: ``box_head.*``, ``box_predictor.*``, ``mask_head.*``, ``keypoint_head.*`` (poolers
    have no parameters).

    Args:
        box_in_features (list[str]): feature maps the box branch pools from.
        box_pooler (ROIPooler), box_head (nn.Module), box_predictor (FastRCNNOutputLayers).
        mask_in_features / mask_pooler / mask_head: the mask branch (None: off). With ``mask_pooler`` None
            the mask head receives the dict of feature maps.
        keypoint_in_features / keypoint_pooler / keypoint_head: the keypoint branch (None: off).
        train_on_pred_boxes (bool): train the mask / keypoint branches on the predicted boxes of the box branch.
        **kwargs: :class:`ROIHeads` arguments.
    """

    config_class: ClassVar[type] = StandardROIHeadsConfig

    def __init__(
        self,
        *,
        box_in_features: Sequence[str],
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_in_features: Sequence[str] | None = None,
        mask_pooler: ROIPooler | None = None,
        mask_head: nn.Module | None = None,
        keypoint_in_features: Sequence[str] | None = None,
        keypoint_pooler: ROIPooler | None = None,
        keypoint_head: nn.Module | None = None,
        train_on_pred_boxes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.in_features = self.box_in_features = list(as_tuple(box_in_features, "box_in_features"))
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_in_features is not None
        if self.mask_on:
            if mask_head is None:
                raise ValueError("mask_head must be given with mask_in_features")
            self.mask_in_features = list(as_tuple(mask_in_features, "mask_in_features"))
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        self.keypoint_on = keypoint_in_features is not None
        if self.keypoint_on:
            if keypoint_head is None:
                raise ValueError("keypoint_head must be given with keypoint_in_features")
            self.keypoint_in_features = list(as_tuple(keypoint_in_features, "keypoint_in_features"))
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head
        self.train_on_pred_boxes = bool(train_on_pred_boxes)

    @classmethod
    def from_config(
        cls, cfg: StandardROIHeadsConfig | None, input_shape: Mapping[str, ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs: builds the poolers and the registered box / mask / keypoint heads."""
        cfg = cfg if cfg is not None else StandardROIHeadsConfig()
        if not isinstance(input_shape, Mapping):
            raise TypeError(f"input_shape must be a dict name -> ShapeSpec, got {type(input_shape).__name__}")
        missing = [f for f in cfg.in_features if f not in input_shape]
        if missing:
            raise ValueError(f"in_features {missing} are not in input_shape ({sorted(input_shape)})")
        in_features = list(cfg.in_features)
        scales = tuple(1.0 / input_shape[k].stride for k in in_features)
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"in_features must have the same channels, got {channels}")
        in_channels = channels.pop()

        def pooler(resolution: int, sampling_ratio: int, pooler_type: str) -> ROIPooler:
            return ROIPooler(
                output_size=resolution, scales=scales, sampling_ratio=sampling_ratio, pooler_type=pooler_type
            )

        r = cfg.box_pooler_resolution
        box_head = build_component(
            "box_head", cfg.box_head_name, cfg.box_head, ShapeSpec(channels=in_channels, height=r, width=r)
        )
        pred_kwargs = FastRCNNOutputLayers.from_config(
            _with_num_classes(cfg.box_predictor, cfg.num_classes), box_head.output_shape
        )
        ret: dict[str, Any] = {
            "num_classes": cfg.num_classes,
            "batch_size_per_image": cfg.batch_size_per_image,
            "positive_fraction": cfg.positive_fraction,
            "proposal_matcher": Matcher(
                list(cfg.iou_thresholds), list(cfg.iou_labels), allow_low_quality_matches=False
            ),
            "proposal_append_gt": cfg.proposal_append_gt,
            "box_in_features": in_features,
            "box_pooler": pooler(r, cfg.box_pooler_sampling_ratio, cfg.box_pooler_type),
            "box_head": box_head,
            "box_predictor": FastRCNNOutputLayers(**pred_kwargs),
            "train_on_pred_boxes": cfg.train_on_pred_boxes,
        }
        if cfg.mask_on:
            r = cfg.mask_pooler_resolution
            ret["mask_in_features"] = in_features
            ret["mask_pooler"] = pooler(r, cfg.mask_pooler_sampling_ratio, cfg.mask_pooler_type)
            ret["mask_head"] = build_component(
                "mask_head",
                cfg.mask_head_name,
                _with_num_classes(cfg.mask_head, cfg.num_classes),
                ShapeSpec(channels=in_channels, height=r, width=r),
            )
        if cfg.keypoint_on:
            r = cfg.keypoint_pooler_resolution
            ret["keypoint_in_features"] = in_features
            ret["keypoint_pooler"] = pooler(r, cfg.keypoint_pooler_sampling_ratio, cfg.keypoint_pooler_type)
            ret["keypoint_head"] = build_component(
                "keypoint_head",
                cfg.keypoint_head_name,
                cfg.keypoint_head,
                ShapeSpec(channels=in_channels, height=r, width=r),
            )
        return ret

    def _required_target_fields(self) -> dict[str, str]:
        heads = {"gt_boxes": "box head", "gt_classes": "box head"}
        if self.mask_on:
            heads["gt_masks"] = "mask head"
        if self.keypoint_on:
            heads["gt_keypoints"] = "keypoint head"
        return heads

    def forward(
        self,
        images: ImageList | None,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Run the ROI heads.

        Args:
            images: unused (kept for detectron2's signature).
            features (dict[str, Tensor[N, C, Hi, Wi]]): feature maps.
            proposals (list[Instances]): per image ``proposal_boxes`` (and ``objectness_logits``).
            targets (list[Instances] | None): per image ``gt_boxes``, ``gt_classes`` (and ``gt_masks``,
                ``gt_keypoints`` for those branches); required in training.

        Returns:
            In training the sampled proposals and the losses (``loss_cls``, ``loss_box_reg``, ``loss_mask``,
            ``loss_keypoint``); in inference the detections (``pred_boxes``, ``scores``, ``pred_classes``,
            ``pred_masks``, ``pred_keypoints``) in the frame of each proposal's ``image_size``, and ``{}``.
        """
        del images
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a dict name -> Tensor[N, C, H, W], got {type(features).__name__}"
            )
        if not isinstance(proposals, (list, tuple)):
            raise TypeError(f"proposals must be a list of Instances, got {type(proposals).__name__}")
        for i, p in enumerate(proposals):
            if not isinstance(p, Instances) or not p.has("proposal_boxes"):
                raise ValueError(f"proposals[{i}] must be Instances with a 'proposal_boxes' field")
        if self.training:
            _check_targets(targets, len(proposals), self._required_target_fields())
            proposals = self.label_and_sample_proposals(list(proposals), list(targets))
            losses = self._forward_box(features, proposals)
            losses.update(self._forward_mask(features, proposals))
            losses.update(self._forward_keypoint(features, proposals))
            return proposals, losses
        pred_instances = self._forward_box(features, proposals)
        pred_instances = self.forward_with_given_boxes(features, pred_instances)
        return pred_instances, {}

    def forward_with_given_boxes(
        self, features: dict[str, Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the mask and keypoint branches (inference only) on given detections with ``pred_boxes`` and
        ``pred_classes``; returns them with ``pred_masks`` / ``pred_keypoints`` added."""
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference (call eval() first)")
        for i, inst in enumerate(instances):
            if not (inst.has("pred_boxes") and inst.has("pred_classes")):
                raise ValueError(f"instances[{i}] must have fields 'pred_boxes' and 'pred_classes'")
        instances = self._forward_mask(features, instances)
        return self._forward_keypoint(features, instances)

    def _forward_box(self, features: dict[str, Tensor], proposals: list[Instances]) -> Any:
        feats = [features[f] for f in self.box_in_features]
        box_features = self.box_pooler(feats, [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        del box_features
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:
                with torch.no_grad():
                    pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                    for proposals_per_image, pred_boxes_per_image in zip(proposals, pred_boxes):
                        proposals_per_image.proposal_boxes = Boxes(pred_boxes_per_image)
            return losses
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        return pred_instances

    def _forward_mask(self, features: dict[str, Tensor], instances: list[Instances]) -> Any:
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        if self.mask_pooler is not None:
            feats = [features[f] for f in self.mask_in_features]
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            pooled: Any = self.mask_pooler(feats, boxes)
        else:
            pooled = {f: features[f] for f in self.mask_in_features}
        return self.mask_head(pooled, instances)

    def _forward_keypoint(self, features: dict[str, Tensor], instances: list[Instances]) -> Any:
        if not self.keypoint_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = select_proposals_with_visible_keypoints(instances)
        if self.keypoint_pooler is not None:
            feats = [features[f] for f in self.keypoint_in_features]
            boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
            pooled: Any = self.keypoint_pooler(feats, boxes)
        else:
            pooled = {f: features[f] for f in self.keypoint_in_features}
        return self.keypoint_head(pooled, instances)


@dataclass(frozen=True)
class Res5ROIHeadsConfig:
    """Config of :class:`Res5ROIHeads` (detectron2's C4 defaults: ``MODEL.ROI_HEADS``, ``ROI_BOX_HEAD`` pooler
    and ``RESNETS`` values of the res5 stage).

    ``num_classes`` overrides the box predictor's and mask head's. The mask head (when ``mask_on``) is built
    on the res5 output (``res2_out_channels * 8`` channels at the pooler resolution).
    """

    num_classes: int = 80
    in_features: tuple[str, ...] = ("res4",)
    iou_thresholds: tuple[float, ...] = (0.5,)
    iou_labels: tuple[int, ...] = (0, 1)
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    proposal_append_gt: bool = True
    pooler_resolution: int = 14
    pooler_sampling_ratio: int = 0
    pooler_type: str = "ROIAlignV2"
    # res5 stage (detectron2's MODEL.RESNETS)
    num_groups: int = 1
    width_per_group: int = 64
    res2_out_channels: int = 256
    stride_in_1x1: bool = True
    norm: str = "FrozenBN"
    box_predictor: Any = field(default_factory=FastRCNNOutputLayersConfig)
    mask_on: bool = False
    mask_head_name: str = "MaskRCNNConvUpsampleHead"
    mask_head: Any = field(default_factory=MaskRCNNConvUpsampleHeadConfig)

    def __post_init__(self) -> None:
        for name in ("in_features", "iou_thresholds", "iou_labels"):
            object.__setattr__(self, name, as_tuple(getattr(self, name), name))


class Res5ROIHeads(ROIHeads):
    """detectron2's C4 ROI heads: the box and mask branches share the ROI features computed by the res5 stage
    (3 bottleneck blocks, the first with stride 2) on one feature map; the box predictor sees their spatial mean.

    State-dict names: ``res5.{0,1,2}.*``, ``box_predictor.*``, ``mask_head.*``.

    Args:
        in_features (list[str]): the one feature map pooled from (e.g. ["res4"]).
        pooler (ROIPooler): pools the ROI features.
        res5 (nn.Module | list[nn.Module]): the res5 stage.
        box_predictor (FastRCNNOutputLayers): on the pooled res5 output (channels only).
        mask_head (nn.Module | None): on the res5 output (None: no mask branch).
        **kwargs: :class:`ROIHeads` arguments.
    """

    config_class: ClassVar[type] = Res5ROIHeadsConfig

    def __init__(
        self,
        *,
        in_features: Sequence[str],
        pooler: ROIPooler,
        res5: nn.Module | Sequence[nn.Module],
        box_predictor: nn.Module,
        mask_head: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.in_features = list(as_tuple(in_features, "in_features"))
        if len(self.in_features) != 1:
            raise ValueError(f"in_features must name exactly one feature map, got {self.in_features}")
        self.pooler = pooler
        if isinstance(res5, (list, tuple)):
            res5 = nn.Sequential(*res5)
        self.res5 = res5
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_head = mask_head

    @staticmethod
    def build_res5_block(cfg: Res5ROIHeadsConfig) -> tuple[nn.Sequential, int]:
        """The res5 stage of a C4 ResNet and its output channels."""
        from detcore.backbones import BottleneckBlock, make_stage

        factor = 2**3
        bottleneck_channels = cfg.num_groups * cfg.width_per_group * factor
        out_channels = cfg.res2_out_channels * factor
        blocks = make_stage(
            BottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            bottleneck_channels=bottleneck_channels,
            out_channels=out_channels,
            num_groups=cfg.num_groups,
            norm=cfg.norm,
            stride_in_1x1=cfg.stride_in_1x1,
        )
        return nn.Sequential(*blocks), out_channels

    @classmethod
    def from_config(
        cls, cfg: Res5ROIHeadsConfig | None, input_shape: Mapping[str, ShapeSpec]
    ) -> dict[str, Any]:
        """Constructor kwargs: the pooler, the res5 stage, the box predictor and the mask head."""
        cfg = cfg if cfg is not None else Res5ROIHeadsConfig()
        if not isinstance(input_shape, Mapping):
            raise TypeError(f"input_shape must be a dict name -> ShapeSpec, got {type(input_shape).__name__}")
        if len(cfg.in_features) != 1 or cfg.in_features[0] not in input_shape:
            raise ValueError(
                f"in_features must name one feature map of input_shape ({sorted(input_shape)}), got {cfg.in_features}"
            )
        r = cfg.pooler_resolution
        res5, out_channels = cls.build_res5_block(cfg)
        ret: dict[str, Any] = {
            "num_classes": cfg.num_classes,
            "batch_size_per_image": cfg.batch_size_per_image,
            "positive_fraction": cfg.positive_fraction,
            "proposal_matcher": Matcher(
                list(cfg.iou_thresholds), list(cfg.iou_labels), allow_low_quality_matches=False
            ),
            "proposal_append_gt": cfg.proposal_append_gt,
            "in_features": list(cfg.in_features),
            "pooler": ROIPooler(
                output_size=r,
                scales=(1.0 / input_shape[cfg.in_features[0]].stride,),
                sampling_ratio=cfg.pooler_sampling_ratio,
                pooler_type=cfg.pooler_type,
            ),
            "res5": res5,
            "box_predictor": FastRCNNOutputLayers(
                **FastRCNNOutputLayers.from_config(
                    _with_num_classes(cfg.box_predictor, cfg.num_classes),
                    ShapeSpec(channels=out_channels, height=1, width=1),
                )
            ),
        }
        if cfg.mask_on:
            ret["mask_head"] = build_component(
                "mask_head",
                cfg.mask_head_name,
                _with_num_classes(cfg.mask_head, cfg.num_classes),
                ShapeSpec(channels=out_channels, width=r, height=r),
            )
        return ret

    def _shared_roi_transform(self, features: list[Tensor], boxes: list[Boxes]) -> Tensor:
        return self.res5(self.pooler(features, boxes))

    def forward(
        self,
        images: ImageList | None,
        features: dict[str, Tensor],
        proposals: list[Instances],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Same contract as :meth:`StandardROIHeads.forward`, except that training returns ``[]`` (as
        detectron2) instead of the sampled proposals."""
        del images
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a dict name -> Tensor[N, C, H, W], got {type(features).__name__}"
            )
        for i, p in enumerate(proposals):
            if not isinstance(p, Instances) or not p.has("proposal_boxes"):
                raise ValueError(f"proposals[{i}] must be Instances with a 'proposal_boxes' field")
        if self.training:
            required = {"gt_boxes": "box head", "gt_classes": "box head"}
            if self.mask_on:
                required["gt_masks"] = "mask head"
            _check_targets(targets, len(proposals), required)
            proposals = self.label_and_sample_proposals(list(proposals), list(targets))
        proposal_boxes = [x.proposal_boxes for x in proposals]
        box_features = self._shared_roi_transform([features[f] for f in self.in_features], proposal_boxes)
        predictions = self.box_predictor(box_features.mean(dim=[2, 3]))
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.mask_on:
                proposals, fg_selection_masks = select_foreground_proposals(proposals, self.num_classes)
                mask_features = box_features[torch.cat(fg_selection_masks, dim=0)]
                del box_features
                losses.update(self.mask_head(mask_features, proposals))
            return [], losses
        pred_instances, _ = self.box_predictor.inference(predictions, proposals)
        return self.forward_with_given_boxes(features, pred_instances), {}

    def forward_with_given_boxes(
        self, features: dict[str, Tensor], instances: list[Instances]
    ) -> list[Instances]:
        """Run the mask branch (inference only) on detections with ``pred_boxes`` and ``pred_classes``."""
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference (call eval() first)")
        for i, inst in enumerate(instances):
            if not (inst.has("pred_boxes") and inst.has("pred_classes")):
                raise ValueError(f"instances[{i}] must have fields 'pred_boxes' and 'pred_classes'")
        if not self.mask_on:
            return instances
        x = self._shared_roi_transform(
            [features[f] for f in self.in_features], [x.pred_boxes for x in instances]
        )
        return self.mask_head(x, instances)
