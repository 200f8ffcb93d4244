"""Panoptic FPN (https://arxiv.org/abs/1901.02446), as detectron2's ``PanopticFPN``: a
:class:`~detcore.archs.meta_arch.rcnn.GeneralizedRCNN` plus a semantic segmentation head, whose outputs are
combined into a panoptic segmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import detector_postprocess, sem_seg_postprocess
from detcore.archs.meta_arch.rcnn import GeneralizedRCNN, _output_size
from detcore.archs.meta_arch.semantic_seg import batch_sem_seg_targets
from detcore.heads.build import build_component
from detcore.structures import Instances

__all__ = ["PanopticFPN", "combine_semantic_and_instance_outputs"]


class PanopticFPN(GeneralizedRCNN):
    """Instance detection (backbone, proposal generator, ROI heads with masks) plus semantic segmentation
    (``sem_seg_head``) on shared features.

    State-dict names: ``backbone.*``, ``proposal_generator.*``, ``roi_heads.*``, ``sem_seg_head.*``.

    Args:
        sem_seg_head (nn.Module): ``sem_seg_head(features, targets) -> (logits | None, losses)`` with an
            ``ignore_value`` attribute; semantic class 0 stands for "things".
        combine_overlap_thresh (float): an instance is dropped when more than this fraction of its mask is
            already taken by higher-scoring instances.
        combine_stuff_area_thresh (float): stuff regions smaller than this (pixels) are dropped.
        combine_instances_score_thresh (float): instances scoring below this are dropped.
        **kwargs: :class:`GeneralizedRCNN`'s arguments (backbone, proposal_generator, roi_heads, pixel_mean,
            pixel_std, input_format, vis_period).
    """

    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        combine_overlap_thresh: float = 0.5,
        combine_stuff_area_thresh: float = 4096,
        combine_instances_score_thresh: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(sem_seg_head, nn.Module):
            raise TypeError(f"sem_seg_head must be an nn.Module, got {type(sem_seg_head).__name__}")
        if self.proposal_generator is None:
            raise ValueError("PanopticFPN needs a proposal_generator, got None")
        for name, v in (
            ("combine_overlap_thresh", combine_overlap_thresh),
            ("combine_stuff_area_thresh", combine_stuff_area_thresh),
            ("combine_instances_score_thresh", combine_instances_score_thresh),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        self.sem_seg_head = sem_seg_head
        self.combine_overlap_thresh = float(combine_overlap_thresh)
        self.combine_stuff_area_thresh = float(combine_stuff_area_thresh)
        self.combine_instances_score_thresh = float(combine_instances_score_thresh)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig``: :class:`GeneralizedRCNN`'s, plus ``sem_seg_head`` on the
        same backbone and the ``panoptic`` combination thresholds."""
        kwargs = super().from_config(cfg, input_shape)
        kwargs["sem_seg_head"] = build_component(
            "sem_seg_head", cfg.sem_seg_head_name, cfg.sem_seg_head, kwargs["backbone"].output_shape()
        )
        p = cfg.panoptic
        kwargs["combine_overlap_thresh"] = p.combine_overlap_thresh
        kwargs["combine_stuff_area_thresh"] = p.combine_stuff_area_thresh
        kwargs["combine_instances_score_thresh"] = p.combine_instances_score_thresh
        return kwargs

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: the semantic, proposal and detector losses; inference: see :meth:`inference`.

        Args:
            batched_inputs (list[dict]): per image ``image`` (Tensor[C, H, W]), in training ``instances``
                (ground truth with boxes, classes and masks) and ``sem_seg`` (Tensor[H, W] labels, 0 =
                things), optional ``height``/``width``.
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("in training every input dict must have ground-truth 'instances'")
        gt_sem_seg = batch_sem_seg_targets(
            batched_inputs,
            images,
            self.backbone,
            getattr(self.sem_seg_head, "ignore_value", 255),
            self.device,
        )
        features = self.backbone(images.tensor)
        _, sem_seg_losses = self.sem_seg_head(features, gt_sem_seg)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses = dict(sem_seg_losses)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(  # type: ignore[override]
        self, batched_inputs: Sequence[Mapping[str, Any]], do_postprocess: bool = True
    ) -> Any:
        """Run inference.

        Returns:
            With ``do_postprocess``: per image ``{"sem_seg": Tensor[C, height, width], "instances": Instances,
            "panoptic_seg": (Tensor[height, width] int32, list[dict])}`` (see
            :func:`combine_semantic_and_instance_outputs`). Otherwise ``(detector_results, sem_seg_results)``
            in the frame of the padded input.
        """
        if self.training:
            raise RuntimeError("inference() needs eval mode (call model.eval() first)")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        sem_seg_results, _ = self.sem_seg_head(features, None)
        proposals, _ = self.proposal_generator(images, features, None)
        detector_results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return detector_results, sem_seg_results
        processed = []
        for sem_seg_result, detector_result, input_per_image, image_size in zip(
            sem_seg_results, detector_results, batched_inputs, images.image_sizes
        ):
            height, width = _output_size(input_per_image, image_size)
            sem_seg_r = sem_seg_postprocess(sem_seg_result, image_size, height, width)
            detector_r = detector_postprocess(detector_result, height, width)
            panoptic_r = combine_semantic_and_instance_outputs(
                detector_r,
                sem_seg_r.argmax(dim=0),
                self.combine_overlap_thresh,
                self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh,
            )
            processed.append({"sem_seg": sem_seg_r, "instances": detector_r, "panoptic_seg": panoptic_r})
        return processed


def combine_semantic_and_instance_outputs(
    instance_results: Instances,
    semantic_results: Tensor,
    overlap_threshold: float,
    stuff_area_thresh: float,
    instances_score_thresh: float,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Merge instance and semantic predictions into a panoptic segmentation (detectron2's heuristic).

    Instances are visited by decreasing score, stopping at the first one scoring below
    ``instances_score_thresh``; an instance with an empty mask, or whose mask overlaps the pixels already
    assigned by more than ``overlap_threshold`` of its area, is skipped; otherwise its not yet assigned
    pixels become a new segment. Then each semantic label except 0 ("things") whose still unassigned pixels
    cover at least ``stuff_area_thresh`` becomes a stuff segment. Segment ids count from 1; 0 means void.

    Args:
        instance_results (Instances): ``scores`` [N], ``pred_classes`` [N], ``pred_masks`` [N, H, W] (bool or
            0/1), in the output resolution.
        semantic_results (Tensor[H, W] int): per-pixel semantic labels (argmax of the semantic logits).
        overlap_threshold (float): in [0, 1].
        stuff_area_thresh (float): minimum stuff area in pixels.
        instances_score_thresh (float): minimum instance score.

    Returns:
        panoptic_seg (Tensor[H, W] int32): segment id per pixel.
        segments_info (list[dict]): per segment ``id``, ``isthing``, ``category_id`` and, for things,
        ``score`` and ``instance_id`` (index in ``instance_results``), for stuff ``area``.
    """
    if not isinstance(semantic_results, Tensor) or semantic_results.dim() != 2:
        raise ValueError(
            "semantic_results must be a Tensor[H, W] of labels, got "
            f"{list(semantic_results.shape) if isinstance(semantic_results, Tensor) else type(semantic_results).__name__}"
        )
    if semantic_results.dtype.is_floating_point:
        raise TypeError(f"semantic_results must hold integer labels, got {semantic_results.dtype}")
    if not isinstance(instance_results, Instances):
        raise TypeError(f"instance_results must be an Instances, got {type(instance_results).__name__}")
    for field in ("scores", "pred_classes", "pred_masks"):
        if len(instance_results) > 0 and not instance_results.has(field):
            raise ValueError(f"instance_results must have a '{field}' field")
    panoptic_seg = torch.zeros_like(semantic_results, dtype=torch.int32)
    current_segment_id = 0
    segments_info: list[dict[str, Any]] = []
    if len(instance_results) > 0:
        masks = instance_results.pred_masks
        if masks.dim() != 3 or tuple(masks.shape[1:]) != tuple(semantic_results.shape):
            raise ValueError(
                f"instance_results.pred_masks must be [N, H, W] with (H, W) = {list(semantic_results.shape)} "
                f"(the semantic map), got {list(masks.shape)}"
            )
        sorted_inds = torch.argsort(-instance_results.scores)
        instance_masks = masks.to(dtype=torch.bool, device=panoptic_seg.device)
        for inst_id in sorted_inds:
            score = instance_results.scores[inst_id].item()
            if score < instances_score_thresh:
                break
            mask = instance_masks[inst_id]
            mask_area = mask.sum().item()
            if mask_area == 0:
                continue
            intersect = mask & (panoptic_seg > 0)
            intersect_area = intersect.sum().item()
            if intersect_area * 1.0 / mask_area > overlap_threshold:
                continue
            if intersect_area > 0:
                mask = mask & (panoptic_seg == 0)
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append(
                {
                    "id": current_segment_id,
                    "isthing": True,
                    "score": score,
                    "category_id": int(instance_results.pred_classes[inst_id].item()),
                    "instance_id": int(inst_id.item()),
                }
            )

    for semantic_label in torch.unique(semantic_results).cpu().tolist():
        if semantic_label == 0:  # 0 is the "things" class of the semantic head
            continue
        mask = (semantic_results == semantic_label) & (panoptic_seg == 0)
        mask_area = mask.sum().item()
        if mask_area < stuff_area_thresh:
            continue
        current_segment_id += 1
        panoptic_seg[mask] = current_segment_id
        segments_info.append(
            {"id": current_segment_id, "isthing": False, "category_id": semantic_label, "area": mask_area}
        )
    return panoptic_seg, segments_info
