"""Region Proposal Network (Faster R-CNN's RPN) with detectron2's semantics and state-dict names."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.heads._config import as_tuple
from detcore.heads.anchor_generator import DefaultAnchorGeneratorConfig
from detcore.heads.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detcore.heads.build import build_anchor_generator, build_rpn_head
from detcore.heads.matcher import Matcher
from detcore.heads.proposal_generator.proposal_utils import select_proposals_per_image
from detcore.heads.sampling import subsample_labels
from detcore.ops import Conv2d, ShapeSpec, cat
from detcore.structures import Boxes, ImageList, Instances, pairwise_iou

__all__ = ["RPN", "RPNConfig", "StandardRPNHead", "StandardRPNHeadConfig"]


def _gather_raw_deltas(raw: Tensor, idx: Tensor, box_dim: int) -> Tensor:
    """Deltas ``[N, k, B]`` of anchors ``idx [N, k]`` (indices in (row, column, anchor) order) from a head
    output ``[N, A*B, H, W]``, without permuting the whole map."""
    n, _, h, w = raw.shape
    per_pos = raw.reshape(n, -1, box_dim, h * w)  # [N, A, B, H*W] (a view for NCHW and channels-last)
    num_cells = per_pos.shape[1]
    batch = torch.arange(n, device=idx.device)[:, None]
    return per_pos[batch, idx % num_cells, :, idx // num_cells]


@dataclass(frozen=True)
class StandardRPNHeadConfig:
    """Config of :class:`StandardRPNHead` (detectron2's ``MODEL.RPN.CONV_DIMS``).

    Attributes:
        conv_dims: output channels of the 3x3 convs before the predictors; -1 keeps the input channels.
    """

    conv_dims: tuple[int, ...] = (-1,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_dims", tuple(int(c) for c in as_tuple(self.conv_dims, "conv_dims")))


class StandardRPNHead(nn.Module):
    """detectron2's standard RPN head, shared by all levels: 3x3 conv(s) + ReLU, then 1x1 convs predicting
    ``A`` objectness logits and ``A * box_dim`` anchor deltas per position.

    State-dict names: ``conv.{weight,bias}`` (one conv) or ``conv.conv{k}.{weight,bias}`` (several),
    ``objectness_logits.{weight,bias}``, ``anchor_deltas.{weight,bias}``. Weights are initialised with
    N(0, 0.01), biases with 0.

    Args:
        in_channels (int): channels of every input feature map.
        num_anchors (int): anchors per position (the same on every level).
        box_dim (int): box parameters per anchor (4, or 5 for rotated anchors).
        conv_dims (list[int]): channels of the hidden 3x3 convs; -1 means ``in_channels``.
    """

    config_class: ClassVar[type] = StandardRPNHeadConfig

    def __init__(
        self, *, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims: Sequence[int] = (-1,)
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_anchors", num_anchors), ("box_dim", box_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        conv_dims = list(as_tuple(conv_dims, "conv_dims"))
        if len(conv_dims) == 0:
            raise ValueError("conv_dims must have at least one entry (use [-1] for one conv of in_channels)")
        cur_channels = in_channels
        if len(conv_dims) == 1:
            out_channels = cur_channels if conv_dims[0] == -1 else conv_dims[0]
            if out_channels <= 0:
                raise ValueError(f"conv_dims must be positive or -1, got {conv_dims}")
            self.conv = self._get_rpn_conv(cur_channels, out_channels)
            cur_channels = out_channels
        else:
            self.conv = nn.Sequential()
            for k, conv_dim in enumerate(conv_dims):
                out_channels = cur_channels if conv_dim == -1 else conv_dim
                if out_channels <= 0:
                    raise ValueError(f"conv_dims must be positive or -1, got {conv_dims}")
                self.conv.add_module(f"conv{k}", self._get_rpn_conv(cur_channels, out_channels))
                cur_channels = out_channels
        self.objectness_logits = nn.Conv2d(cur_channels, num_anchors, kernel_size=1, stride=1)
        self.anchor_deltas = nn.Conv2d(cur_channels, num_anchors * box_dim, kernel_size=1, stride=1)
        self.num_anchors = num_anchors
        self.box_dim = box_dim
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)

    @staticmethod
    def _get_rpn_conv(in_channels: int, out_channels: int) -> nn.Module:
        return Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation=nn.ReLU())

    @classmethod
    def from_config(
        cls,
        cfg: StandardRPNHeadConfig | None,
        input_shape: Sequence[ShapeSpec],
        *,
        num_anchors: int | Sequence[int],
        box_dim: int = 4,
    ) -> dict[str, Any]:
        """Constructor kwargs. ``num_anchors`` (per level, or one int) and ``box_dim`` come from the anchor
        generator; every level must have the same channels and number of anchors."""
        cfg = cfg if cfg is not None else StandardRPNHeadConfig()
        in_channels = {s.channels for s in input_shape}
        if len(in_channels) != 1 or None in in_channels:
            raise ValueError(
                f"input_shape must give the same channels for every level, got {list(input_shape)}"
            )
        if not isinstance(num_anchors, int):
            if len(set(num_anchors)) != 1:
                raise ValueError(
                    f"num_anchors must be the same on every level for StandardRPNHead, got {list(num_anchors)}"
                )
            num_anchors = next(iter(num_anchors))
        return {
            "in_channels": in_channels.pop(),
            "num_anchors": num_anchors,
            "box_dim": box_dim,
            "conv_dims": cfg.conv_dims,
        }

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Predict for every level.

        Args:
            features (list[Tensor[N, C, Hi, Wi]]): feature maps.

        Returns:
            pred_objectness_logits (list[Tensor[N, A, Hi, Wi]]) and pred_anchor_deltas
            (list[Tensor[N, A*box_dim, Hi, Wi]]).
        """
        if not isinstance(features, (list, tuple)):
            raise TypeError(f"features must be a list of Tensor[N, C, H, W], got {type(features).__name__}")
        pred_objectness_logits = []
        pred_anchor_deltas = []
        for x in features:
            t = self.conv(x)
            pred_objectness_logits.append(self.objectness_logits(t))
            pred_anchor_deltas.append(self.anchor_deltas(t))
        return pred_objectness_logits, pred_anchor_deltas


@dataclass(frozen=True)
class RPNConfig:
    """Config of :class:`RPN`: detectron2's ``MODEL.RPN.*`` defaults (``defaults.py``, a C4 model);
    :meth:`base_rcnn_fpn` gives Base-RCNN-FPN's values.

    Attributes:
        in_features: feature maps the RPN uses.
        head_name / head: the "rpn_head" component and its config (None: its defaults).
        anchor_generator_name / anchor_generator: the "anchor_generator" component and its config.
        iou_thresholds / iou_labels: anchor Matcher (with low-quality matches).
        batch_size_per_image / positive_fraction: anchor sampling.
        bbox_reg_weights: Box2BoxTransform weights.
        bbox_reg_loss_type: "smooth_l1", "giou", "diou" or "ciou".
        bbox_reg_loss_weight: extra weight of loss_rpn_loc (times loss_weight).
        smooth_l1_beta: smooth L1 beta (0: L1).
        loss_weight: weight of both RPN losses.
        boundary_thresh: anchors this far outside the image are ignored in training (-1: off).
        pre_nms_topk_train / pre_nms_topk_test: candidates per level before NMS.
        post_nms_topk_train / post_nms_topk_test: proposals per image after NMS.
        nms_thresh: NMS IoU threshold.
        min_size: minimal proposal width/height (``MODEL.PROPOSAL_GENERATOR.MIN_SIZE``).
    """

    in_features: tuple[str, ...] = ("res4",)
    head_name: str = "StandardRPNHead"
    head: Any = field(default_factory=StandardRPNHeadConfig)
    anchor_generator_name: str = "DefaultAnchorGenerator"
    anchor_generator: Any = field(default_factory=DefaultAnchorGeneratorConfig)
    iou_thresholds: tuple[float, ...] = (0.3, 0.7)
    iou_labels: tuple[int, ...] = (0, -1, 1)
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    bbox_reg_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    bbox_reg_loss_type: str = "smooth_l1"
    bbox_reg_loss_weight: float = 1.0
    smooth_l1_beta: float = 0.0
    loss_weight: float = 1.0
    boundary_thresh: float = -1
    pre_nms_topk_train: int = 12000
    pre_nms_topk_test: int = 6000
    post_nms_topk_train: int = 2000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    min_size: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_features", "iou_thresholds", "iou_labels", "bbox_reg_weights"):
            object.__setattr__(self, name, as_tuple(getattr(self, name), name))

    @classmethod
    def base_rcnn_fpn(cls) -> RPNConfig:
        """Base-RCNN-FPN's RPN: p2..p6, one anchor size per level, pre/post-NMS top-k 2000/1000 (train) and
        1000/1000 (test)."""
        return cls(
            in_features=("p2", "p3", "p4", "p5", "p6"),
            anchor_generator=DefaultAnchorGeneratorConfig.base_rcnn_fpn(),
            pre_nms_topk_train=2000,
            pre_nms_topk_test=1000,
            post_nms_topk_train=1000,
            post_nms_topk_test=1000,
        )


class RPN(nn.Module):
    """Region Proposal Network (detectron2's ``RPN``).

    Submodule names follow detectron2: ``rpn_head`` (state-dict keys ``proposal_generator.rpn_head.*`` inside
    a model) and ``anchor_generator`` (no state).

    Args:
        in_features (list[str]): names of the feature maps to use.
        head (nn.Module): maps ``list[Tensor[N, C, Hi, Wi]]`` to (objectness logits ``[N, A, Hi, Wi]``,
            deltas ``[N, A*B, Hi, Wi]``) per level.
        anchor_generator (nn.Module): maps the feature list to ``list[Boxes]`` (``Hi*Wi*A`` each) and has
            ``box_dim``.
        anchor_matcher (Matcher): labels anchors by IoU with the ground truth.
        box2box_transform (Box2BoxTransform): anchor <-> box transform.
        batch_size_per_image (int): anchors sampled per image for the losses.
        positive_fraction (float): maximal fraction of positives among them.
        pre_nms_topk (tuple[int, int]): (train, test) candidates per level before NMS.
        post_nms_topk (tuple[int, int]): (train, test) proposals per image after NMS.
        nms_thresh (float): NMS IoU threshold.
        min_box_size (float): proposals with width or height <= this are removed.
        anchor_boundary_thresh (float): anchors more than this outside the image are ignored (< 0: off).
        loss_weight (float | dict[str, float]): weight of both losses, or per loss name.
        box_reg_loss_type (str): "smooth_l1", "giou", "diou" or "ciou".
        smooth_l1_beta (float): smooth L1 beta (0: L1).
    """

    config_class: ClassVar[type] = RPNConfig

    def __init__(
        self,
        *,
        in_features: Sequence[str],
        head: nn.Module,
        anchor_generator: nn.Module,
        anchor_matcher: Matcher,
        box2box_transform: Box2BoxTransform,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk: tuple[int, int] = (2000, 1000),
        post_nms_topk: tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        loss_weight: float | Mapping[str, float] = 1.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = list(as_tuple(in_features, "in_features"))
        if not all(isinstance(f, str) for f in self.in_features) or not self.in_features:
            raise ValueError(f"in_features must be a non-empty list of feature names, got {in_features!r}")
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.anchor_matcher = anchor_matcher
        self.box2box_transform = box2box_transform
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        pre_nms_topk = as_tuple(pre_nms_topk, "pre_nms_topk")
        post_nms_topk = as_tuple(post_nms_topk, "post_nms_topk")
        if len(pre_nms_topk) != 2 or len(post_nms_topk) != 2:
            raise ValueError(
                f"pre_nms_topk and post_nms_topk must be (train, test) pairs, got {pre_nms_topk} and {post_nms_topk}"
            )
        self.pre_nms_topk = {True: int(pre_nms_topk[0]), False: int(pre_nms_topk[1])}
        self.post_nms_topk = {True: int(post_nms_topk[0]), False: int(post_nms_topk[1])}
        self.nms_thresh = float(nms_thresh)
        self.min_box_size = float(min_box_size)
        self.anchor_boundary_thresh = anchor_boundary_thresh
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_rpn_cls": float(loss_weight), "loss_rpn_loc": float(loss_weight)}
        self.loss_weight = dict(loss_weight)
        if box_reg_loss_type not in ("smooth_l1", "giou", "diou", "ciou"):
            raise ValueError(
                f"box_reg_loss_type must be 'smooth_l1', 'giou', 'diou' or 'ciou', got {box_reg_loss_type!r}"
            )
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = float(smooth_l1_beta)

    @classmethod
    def from_config(cls, cfg: RPNConfig | None, input_shape: Mapping[str, ShapeSpec]) -> dict[str, Any]:
        """Constructor kwargs; builds the anchor generator and head by name through the plugin registry."""
        cfg = cfg if cfg is not None else RPNConfig()
        missing = [f for f in cfg.in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"input_shape has no feature(s) {missing} named in in_features; available: {sorted(input_shape)}"
            )
        shapes = [input_shape[f] for f in cfg.in_features]
        anchor_generator = build_anchor_generator(
            cfg.anchor_generator, shapes, name=cfg.anchor_generator_name
        )
        head = build_rpn_head(
            cfg.head,
            shapes,
            num_anchors=anchor_generator.num_anchors,
            box_dim=anchor_generator.box_dim,
            name=cfg.head_name,
        )
        return {
            "in_features": cfg.in_features,
            "head": head,
            "anchor_generator": anchor_generator,
            "anchor_matcher": Matcher(cfg.iou_thresholds, cfg.iou_labels, allow_low_quality_matches=True),
            "box2box_transform": Box2BoxTransform(weights=cfg.bbox_reg_weights),
            "batch_size_per_image": cfg.batch_size_per_image,
            "positive_fraction": cfg.positive_fraction,
            "pre_nms_topk": (cfg.pre_nms_topk_train, cfg.pre_nms_topk_test),
            "post_nms_topk": (cfg.post_nms_topk_train, cfg.post_nms_topk_test),
            "nms_thresh": cfg.nms_thresh,
            "min_box_size": cfg.min_size,
            "anchor_boundary_thresh": cfg.boundary_thresh,
            "loss_weight": {
                "loss_rpn_cls": cfg.loss_weight,
                "loss_rpn_loc": cfg.bbox_reg_loss_weight * cfg.loss_weight,
            },
            "box_reg_loss_type": cfg.bbox_reg_loss_type,
            "smooth_l1_beta": cfg.smooth_l1_beta,
        }

    @classmethod
    def build(cls, cfg: RPNConfig | None, input_shape: Mapping[str, ShapeSpec]) -> RPN:
        """``cls(**cls.from_config(cfg, input_shape))``."""
        return cls(**cls.from_config(cfg, input_shape))

    def _subsample_labels(self, label: Tensor) -> Tensor:
        pos_idx, neg_idx = subsample_labels(label, self.batch_size_per_image, self.positive_fraction, 0)
        label.fill_(-1)
        label.scatter_(0, pos_idx, 1)
        label.scatter_(0, neg_idx, 0)
        return label

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: list[Boxes], gt_instances: list[Instances]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Label every anchor of every image and sample ``batch_size_per_image`` of them.

        Args:
            anchors (list[Boxes]): anchors of each level.
            gt_instances (list[Instances]): per image, ``gt_boxes`` (Boxes) and the image size.

        Returns:
            gt_labels (list[Tensor[R] int8]): per image, 1 (sampled positive), 0 (sampled negative) or -1.
            matched_gt_boxes (list[Tensor[R, 4]]): per image, the ground-truth box matched to each anchor
            (zeros when the image has no ground truth).
        """
        anchors_all = Boxes.cat(list(anchors))
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            if not isinstance(inst, Instances) or not inst.has("gt_boxes"):
                raise ValueError("gt_instances must be a list of Instances with a gt_boxes field")
            gt_boxes_i = inst.gt_boxes
            match_quality_matrix = pairwise_iou(gt_boxes_i, anchors_all)
            matched_idxs, gt_labels_i = self.anchor_matcher(match_quality_matrix)
            gt_labels_i = gt_labels_i.to(device=gt_boxes_i.device)
            del match_quality_matrix

            if self.anchor_boundary_thresh >= 0:
                inside = anchors_all.inside_box(inst.image_size, self.anchor_boundary_thresh)
                gt_labels_i[~inside] = -1

            gt_labels_i = self._subsample_labels(gt_labels_i)
            if len(gt_boxes_i) == 0:
                matched_gt_boxes_i = torch.zeros_like(anchors_all.tensor)
            else:
                matched_gt_boxes_i = gt_boxes_i.tensor[matched_idxs]
            gt_labels.append(gt_labels_i)
            matched_gt_boxes.append(matched_gt_boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[Tensor],
        gt_labels: list[Tensor],
        pred_anchor_deltas: list[Tensor],
        gt_boxes: list[Tensor],
    ) -> dict[str, Tensor]:
        """RPN losses, normalised by ``batch_size_per_image * num_images``.

        Args:
            anchors (list[Boxes]): anchors of each level.
            pred_objectness_logits (list[Tensor[N, Hi*Wi*A]]): logits per level.
            gt_labels (list[Tensor[R]]): from :meth:`label_and_sample_anchors`.
            pred_anchor_deltas (list[Tensor[N, Hi*Wi*A, B]]): deltas per level.
            gt_boxes (list[Tensor[R, B]]): matched ground-truth boxes per image.

        Returns:
            dict: ``loss_rpn_cls`` (binary cross-entropy with logits over sampled anchors) and
            ``loss_rpn_loc`` (box regression over positive anchors), each times its loss weight.
        """
        num_images = len(gt_labels)
        gt_labels_t = torch.stack(gt_labels)
        pos_mask = gt_labels_t == 1
        localization_loss = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        valid_mask = gt_labels_t >= 0
        objectness_loss = F.binary_cross_entropy_with_logits(
            cat(list(pred_objectness_logits), dim=1)[valid_mask],
            gt_labels_t[valid_mask].to(torch.float32),
            reduction="sum",
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {
            "loss_rpn_cls": objectness_loss / normalizer,
            "loss_rpn_loc": localization_loss / normalizer,
        }
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, Tensor],
        gt_instances: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Propose boxes (and compute losses in training).

        Args:
            images (ImageList): the batch; only ``image_sizes`` is used.
            features (dict[str, Tensor[N, C, Hi, Wi]]): feature maps by name.
            gt_instances (list[Instances] | None): ground truth with ``gt_boxes`` (required in training).

        Returns:
            proposals (list[Instances]): per image, ``proposal_boxes`` (Boxes) and ``objectness_logits``
            (Tensor), sorted by decreasing objectness.
            losses (dict[str, Tensor]): ``loss_rpn_cls`` and ``loss_rpn_loc`` in training, else empty.
        """
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise ValueError(f"features has no map(s) {missing}; got {sorted(features)}")
        feats = [features[f] for f in self.in_features]
        if len(images.image_sizes) != feats[0].shape[0]:
            raise ValueError(
                f"images has {len(images.image_sizes)} image sizes but the features have batch size {feats[0].shape[0]}"
            )
        anchors = self.anchor_generator(feats)
        pred_objectness_logits, raw_anchor_deltas = self.rpn_head(feats)
        box_dim = self.anchor_generator.box_dim
        # (N, A, Hi, Wi) -> (N, Hi, Wi, A) -> (N, Hi*Wi*A)
        pred_objectness_logits = [score.permute(0, 2, 3, 1).flatten(1) for score in pred_objectness_logits]
        if not self.training:
            # inference: gather the deltas of the top-k anchors straight from the head's layout
            with torch.no_grad():
                proposals = self._predict(
                    anchors,
                    pred_objectness_logits,
                    lambda level, idx: _gather_raw_deltas(raw_anchor_deltas[level], idx, box_dim),
                    images.image_sizes,
                )
            return proposals, {}
        if gt_instances is None:
            raise ValueError("RPN requires gt_instances in training mode")
        # (N, A*B, Hi, Wi) -> (N, A, B, Hi, Wi) -> (N, Hi, Wi, A, B) -> (N, Hi*Wi*A, B)
        pred_anchor_deltas = [
            x.view(x.shape[0], -1, box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in raw_anchor_deltas
        ]
        gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
        losses = self.losses(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        proposals = self.predict_proposals(
            anchors, pred_objectness_logits, pred_anchor_deltas, images.image_sizes
        )
        return proposals, losses

    @torch.no_grad()
    def predict_proposals(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[Tensor],
        pred_anchor_deltas: list[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Decode and select proposals (no gradient flows to the boxes, as in detectron2).

        Same result as decoding every anchor and calling :func:`find_top_rpn_proposals`, but only the
        per-level top-k anchors are decoded.

        Args:
            anchors (list[Boxes]): anchors of each level.
            pred_objectness_logits (list[Tensor[N, Hi*Wi*A]]): logits per level.
            pred_anchor_deltas (list[Tensor[N, Hi*Wi*A, B]]): deltas per level.
            image_sizes (list[tuple[int, int]]): ``(h, w)`` of each image.

        Returns:
            list[Instances]: per image, ``proposal_boxes`` and ``objectness_logits``.
        """
        return self._predict(
            anchors,
            pred_objectness_logits,
            lambda level, idx: pred_anchor_deltas[level][
                torch.arange(idx.shape[0], device=idx.device)[:, None], idx
            ],
            image_sizes,
        )

    def _predict(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[Tensor],
        gather_deltas: Callable[[int, Tensor], Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Per level top-k, decode only those, then per-image selection; ``gather_deltas(level, idx [N, k])``
        returns the deltas ``[N, k, B]`` of the selected anchors."""
        num_images = len(image_sizes)
        pre_nms_topk = self.pre_nms_topk[self.training]
        device = pred_objectness_logits[0].device
        topk_scores, topk_proposals, level_ids = [], [], []
        for level_id, (anchors_i, logits_i) in enumerate(zip(anchors, pred_objectness_logits)):
            k = min(logits_i.shape[1], pre_nms_topk)
            scores_i, idx = logits_i.topk(k, dim=1)
            b = anchors_i.tensor.shape[1]
            sel_deltas = gather_deltas(level_id, idx).reshape(-1, b)
            sel_anchors = anchors_i.tensor[idx.reshape(-1)]
            boxes_i = self.box2box_transform.apply_deltas(sel_deltas, sel_anchors)
            topk_proposals.append(boxes_i.view(num_images, k, b))
            topk_scores.append(scores_i)
            level_ids.append(torch.full((k,), level_id, dtype=torch.int64, device=device))
        return select_proposals_per_image(
            torch.cat(topk_proposals, dim=1),
            torch.cat(topk_scores, dim=1),
            torch.cat(level_ids, dim=0),
            image_sizes,
            self.nms_thresh,
            self.post_nms_topk[self.training],
            self.min_box_size,
            self.training,
        )

    def _decode_proposals(self, anchors: list[Boxes], pred_anchor_deltas: list[Tensor]) -> list[Tensor]:
        """Decode every anchor of every level: ``list[Tensor[N, Hi*Wi*A, B]]`` (detectron2's helper)."""
        n = pred_anchor_deltas[0].shape[0]
        proposals = []
        for anchors_i, deltas_i in zip(anchors, pred_anchor_deltas):
            b = anchors_i.tensor.size(1)
            deltas_i = deltas_i.reshape(-1, b)
            anchors_rep = anchors_i.tensor.unsqueeze(0).expand(n, -1, -1).reshape(-1, b)
            proposals.append(self.box2box_transform.apply_deltas(deltas_i, anchors_rep).view(n, -1, b))
        return proposals
