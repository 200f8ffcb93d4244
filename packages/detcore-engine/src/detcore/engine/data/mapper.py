"""DatasetMapper: a dataset dict -> the model's input dict (detectron2's default mapper)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from detcore.engine.data import detection_utils as utils
from detcore.engine.data.transforms import AugInput, Augmentation, AugmentationList, Transform

__all__ = ["DatasetMapper"]


def roi_heads_flag(cfg, name: str) -> bool:
    """``cfg.model.roi_heads.<name>`` (``mask_on`` / ``keypoint_on``), False for models without ROI heads."""
    return bool(getattr(cfg.model.roi_heads, name, False)) if cfg.model.roi_heads is not None else False


class DatasetMapper:
    """Read the image, apply the augmentations to it and its annotations, and build ``Instances``.

    Args:
        is_train: training mode: keeps annotations (crowd ones dropped) and builds ``instances``;
            otherwise annotations are removed.
        augmentations: augmentations or transforms applied in order.
        image_format: "BGR" (detectron2's default) or "RGB" channel order of the output image.
        use_instance_mask: keep ``segmentation`` as ``gt_masks``.
        instance_mask_format: "polygon" (:class:`PolygonMasks`) or "bitmask" (:class:`BitMasks`).
        use_keypoint: keep ``keypoints`` as ``gt_keypoints``.
        keypoint_hflip_indices (ndarray[K]): keypoint permutation under a horizontal flip (see
            :func:`~detcore.engine.data.detection_utils.create_keypoint_hflip_indices`).
        recompute_boxes: replace ``gt_boxes`` with the boxes of the transformed masks.
        filter_empty: drop instances whose box (or mask) became empty.

    ``__call__`` returns a new dict: the input's keys plus ``image (Tensor[3, H, W] uint8)``, updated
    ``height``/``width`` kept as the ORIGINAL size (the model rescales its outputs to it), and in training
    ``instances`` (``Instances`` of the augmented image size with ``gt_boxes, gt_classes[, gt_masks]
    [, gt_keypoints]``).
    """

    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: Sequence[Augmentation | Transform] = (),
        image_format: str = "BGR",
        use_instance_mask: bool = False,
        instance_mask_format: str = "polygon",
        use_keypoint: bool = False,
        keypoint_hflip_indices: np.ndarray | None = None,
        recompute_boxes: bool = False,
        filter_empty: bool = True,
    ):
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"DatasetMapper: image_format must be 'BGR' or 'RGB', got {image_format!r}")
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                f"DatasetMapper: instance_mask_format must be 'polygon' or 'bitmask', got {instance_mask_format!r}"
            )
        if recompute_boxes and not use_instance_mask:
            raise ValueError("DatasetMapper: recompute_boxes=True needs use_instance_mask=True")
        self.is_train = bool(is_train)
        self.augmentations = AugmentationList(list(augmentations))
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.recompute_boxes = recompute_boxes
        self.filter_empty = filter_empty

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        """Constructor kwargs from a detcore :class:`~detcore.archs.Config` (detectron2's convention):
        ``DatasetMapper(**DatasetMapper.from_config(cfg, is_train))``.

        Training: ``ResizeShortestEdge(cfg.input.min_size_train, max_size_train, min_size_train_sampling)``
        then ``RandomFlip`` per ``cfg.input.random_flip`` ("horizontal", "vertical" or "none"); masks and
        keypoints when the ROI heads have ``mask_on`` / ``keypoint_on``. Inference: ``ResizeShortestEdge`` to
        ``min_size_test`` (capped at ``max_size_test``), no annotations.
        """
        from detcore.engine.data.transforms.augmentation import RandomFlip, ResizeShortestEdge

        inp = cfg.input
        if inp.random_flip not in ("horizontal", "vertical", "none"):
            raise ValueError(
                f"input.random_flip must be 'horizontal', 'vertical' or 'none', got {inp.random_flip!r}"
            )
        if not is_train:
            augs = [ResizeShortestEdge([inp.min_size_test] * 2, inp.max_size_test)]
            return {"is_train": False, "augmentations": augs, "image_format": cfg.model.input_format}
        augs = [ResizeShortestEdge(inp.min_size_train, inp.max_size_train, inp.min_size_train_sampling)]
        if inp.random_flip != "none":
            augs.append(
                RandomFlip(horizontal=inp.random_flip == "horizontal", vertical=inp.random_flip == "vertical")
            )
        return {
            "is_train": True,
            "augmentations": augs,
            "image_format": cfg.model.input_format,
            "use_instance_mask": roi_heads_flag(cfg, "mask_on"),
            "instance_mask_format": inp.mask_format,
            "use_keypoint": roi_heads_flag(cfg, "keypoint_on"),
        }

    def _transform_annotations(self, dataset_dict: dict, transforms, image_shape: tuple[int, int]) -> None:
        annos = []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0) != 0:
                continue
            obj = dict(obj)
            if not self.use_instance_mask:
                obj.pop("segmentation", None)
            if not self.use_keypoint:
                obj.pop("keypoints", None)
            annos.append(
                utils.transform_instance_annotations(
                    obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
                )
            )
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            boxes = instances.gt_masks.get_bounding_boxes()
            boxes.tensor[~torch.isfinite(boxes.tensor)] = 0  # an instance whose polygons all left the image
            boxes.clip(image_shape)
            instances.gt_boxes = boxes
        if self.filter_empty:
            instances = utils.filter_empty_instances(instances)
        dataset_dict["instances"] = instances

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.copy(dataset_dict)  # the annotations list is replaced, never mutated
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
