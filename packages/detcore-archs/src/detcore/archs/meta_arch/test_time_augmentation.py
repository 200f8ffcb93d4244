"""Test-time augmentation of R-CNN models, as detectron2's ``modeling/test_time_augmentation.py``:
:class:`DatasetMapperTTA` makes resized (and flipped) copies of an input, :class:`GeneralizedRCNNWithTTA` runs a
:class:`~detcore.archs.meta_arch.rcnn.GeneralizedRCNN` on all of them, merges their boxes in the original image
and averages the masks that every copy predicts for the merged boxes.

The resize (detectron2's ``ResizeShortestEdge`` / ``ResizeTransform``) and the horizontal flip are implemented
here (small private transforms) so that detcore-archs does not depend on detcore-engine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.archs.meta_arch.postprocessing import detector_postprocess
from detcore.archs.meta_arch.rcnn import GeneralizedRCNN
from detcore.heads.roi_heads import fast_rcnn_inference_single_image
from detcore.structures import Boxes, Instances

__all__ = ["DatasetMapperTTA", "GeneralizedRCNNWithTTA"]

_IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
# score threshold of the merge: every detection of every augmented input takes part (detectron2's value)
_MERGE_SCORE_THRESH = 1e-8


# ----------------------------------------------------------------------------------------------------------
# transforms (a small private subset of detectron2's: resize, horizontal flip, and lists of them)


class _Transform:
    """A deterministic geometric transform of a ``Tensor[C, H, W]`` image and of XYXY boxes."""

    def apply_image(self, image: Tensor) -> Tensor:
        raise NotImplementedError

    def apply_coords(self, coords: Tensor) -> Tensor:
        """coords (Tensor[N, 2] float64): ``(x, y)`` absolute pixels; returns the transformed points."""
        raise NotImplementedError

    def inverse(self) -> _Transform:
        raise NotImplementedError

    def _apply_box64(self, box: Tensor) -> Tensor:
        # the axis-aligned box around the 4 transformed corners (detectron2's Transform.apply_box)
        idxs = torch.tensor([0, 1, 2, 1, 0, 3, 2, 3], device=box.device)
        coords = self.apply_coords(box[:, idxs].reshape(-1, 2)).reshape(-1, 4, 2)
        return torch.cat((coords.amin(dim=1), coords.amax(dim=1)), dim=1)

    def apply_box(self, box: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Transform XYXY boxes.

        Args:
            box (Tensor[N, 4] | ndarray[N, 4]): absolute pixels.

        Returns:
            The boxes around the transformed corners, same type, dtype and device as ``box`` (computed in
            float64).
        """
        if isinstance(box, np.ndarray):
            out = self._apply_box64(torch.from_numpy(np.asarray(box, dtype=np.float64).reshape(-1, 4)))
            return out.numpy().astype(box.dtype if np.issubdtype(box.dtype, np.floating) else np.float64)
        if not isinstance(box, Tensor) or box.dim() != 2 or box.shape[1] != 4:
            raise ValueError(
                f"box must be a Tensor[N, 4] or ndarray[N, 4] (XYXY), got {getattr(box, 'shape', type(box))}"
            )
        out = self._apply_box64(box.detach().to(torch.float64))
        return out.to(box.dtype if box.is_floating_point() else torch.float32)


class _ResizeTransform(_Transform):
    """Resize from ``(h, w)`` to ``(new_h, new_w)`` (detectron2's ``ResizeTransform`` with bilinear
    interpolation): uint8 images through Pillow's bilinear resize (3-channel images as one RGB image, others
    one plane at a time), floating images through ``F.interpolate(mode="bilinear", align_corners=False)``;
    coordinates scale by ``new_w / w`` and ``new_h / h``."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int) -> None:
        self.h, self.w, self.new_h, self.new_w = int(h), int(w), int(new_h), int(new_w)

    def apply_image(self, image: Tensor) -> Tensor:
        if tuple(image.shape[-2:]) != (self.h, self.w):
            raise ValueError(
                f"image must be a Tensor[C, {self.h}, {self.w}] for this resize, got shape {list(image.shape)}"
            )
        if (self.new_h, self.new_w) == (self.h, self.w):
            return image.clone()  # what both Pillow and a scale-1 bilinear interpolation give
        if image.dtype == torch.uint8:
            return _pil_resize(image, self.new_h, self.new_w)
        dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
        out = F.interpolate(
            image[None].to(dtype), size=(self.new_h, self.new_w), mode="bilinear", align_corners=False
        )[0]
        return out.to(image.dtype)

    def apply_coords(self, coords: Tensor) -> Tensor:
        scale = torch.tensor(
            [self.new_w / self.w, self.new_h / self.h], dtype=coords.dtype, device=coords.device
        )
        return coords * scale

    def inverse(self) -> _ResizeTransform:
        return _ResizeTransform(self.new_h, self.new_w, self.h, self.w)

    def __repr__(self) -> str:
        return f"ResizeTransform(h={self.h}, w={self.w}, new_h={self.new_h}, new_w={self.new_w})"


def _pil_resize(image: Tensor, new_h: int, new_w: int) -> Tensor:
    from PIL import Image

    hwc = image.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    if hwc.shape[2] == 3:
        out = np.asarray(Image.fromarray(hwc).resize((new_w, new_h), Image.BILINEAR))
    else:
        planes = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(hwc[:, :, c])).resize((new_w, new_h), Image.BILINEAR)
            )
            for c in range(hwc.shape[2])
        ]
        out = np.stack(planes, axis=2)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).to(image.device)


class _HFlipTransform(_Transform):
    """Horizontal flip of an image of width ``width``: ``x -> width - x``."""

    def __init__(self, width: int) -> None:
        self.width = int(width)

    def apply_image(self, image: Tensor) -> Tensor:
        if image.shape[-1] != self.width:
            raise ValueError(
                f"image must be a Tensor[C, H, {self.width}] for this flip, got shape {list(image.shape)}"
            )
        return image.flip(-1)

    def apply_coords(self, coords: Tensor) -> Tensor:
        return torch.stack((self.width - coords[:, 0], coords[:, 1]), dim=1)

    def inverse(self) -> _HFlipTransform:
        return self

    def __repr__(self) -> str:
        return f"HFlipTransform(width={self.width})"


class _TransformList(_Transform):
    """Transforms applied in order; ``transforms`` lists them."""

    def __init__(self, transforms: Sequence[_Transform]) -> None:
        self.transforms = list(transforms)

    def apply_image(self, image: Tensor) -> Tensor:
        for t in self.transforms:
            image = t.apply_image(image)
        return image

    def apply_coords(self, coords: Tensor) -> Tensor:
        for t in self.transforms:
            coords = t.apply_coords(coords)
        return coords

    def _apply_box64(self, box: Tensor) -> Tensor:
        for t in self.transforms:
            box = t._apply_box64(box)
        return box

    def inverse(self) -> _TransformList:
        return _TransformList([t.inverse() for t in reversed(self.transforms)])

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[_Transform]:
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"TransformList([{', '.join(repr(t) for t in self.transforms)}])"


def _shortest_edge_size(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` as detectron2's ``ResizeShortestEdge``: the short edge to ``short_edge``, then the long
    edge capped at ``max_size``, rounded half up."""
    scale = short_edge * 1.0 / min(h, w)
    if h < w:
        new_h, new_w = short_edge * 1.0, scale * w
    else:
        new_h, new_w = scale * h, short_edge * 1.0
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


# ----------------------------------------------------------------------------------------------------------
# input checks


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_input_dict(d: Any, name: str) -> tuple[int, int]:
    """Checks a model input dict; returns its output size (``height``/``width``, else the image's)."""
    if not isinstance(d, Mapping) or "image" not in d:
        raise TypeError(
            f"{name} must be a dict with an 'image' Tensor[C, H, W] (loading 'file_name' is not supported), "
            f"got {type(d).__name__}" + (f" with keys {sorted(d)}" if isinstance(d, Mapping) else "")
        )
    img = d["image"]
    if not isinstance(img, Tensor):
        raise TypeError(f"{name}['image'] must be a torch.Tensor[C, H, W], got {type(img).__name__}")
    if img.dim() != 3 or img.shape[0] == 0 or img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"{name}['image'] must be a non-empty Tensor[C, H, W], got shape {list(img.shape)}")
    if img.dtype not in _IMAGE_DTYPES:
        raise TypeError(
            f"{name}['image'] must be uint8 or floating (float16/bfloat16/float32/float64), got {img.dtype}"
        )
    if ("height" in d) != ("width" in d):
        raise ValueError(f"{name} must have both 'height' and 'width' or neither, got keys {sorted(d)}")
    if "height" in d:
        return _positive_int(d["height"], f"{name}['height']"), _positive_int(d["width"], f"{name}['width']")
    return int(img.shape[1]), int(img.shape[2])


# ----------------------------------------------------------------------------------------------------------
# the mapper


class DatasetMapperTTA:
    """Test-time augmentation of one model input (detectron2's ``DatasetMapperTTA``): for each short-edge size a
    resized copy of the image and, with ``flip``, its horizontal mirror.

    Args:
        min_sizes (list[int]): short-edge sizes, each gives one resized copy (``ResizeShortestEdge`` semantics:
            short edge to the size, long edge then capped at ``max_size``, sizes rounded half up; bilinear,
            Pillow for uint8 images as detectron2).
        max_size (int): longest edge of the resized copies.
        flip (bool): also add each resized copy flipped horizontally.
    """

    def __init__(self, min_sizes: Sequence[int], max_size: int, flip: bool) -> None:
        if isinstance(min_sizes, (str, bytes)) or not isinstance(min_sizes, Sequence) or len(min_sizes) == 0:
            raise ValueError(f"min_sizes must be a non-empty list of positive ints, got {min_sizes!r}")
        self.min_sizes = tuple(_positive_int(s, f"min_sizes[{i}]") for i, s in enumerate(min_sizes))
        self.max_size = _positive_int(max_size, "max_size")
        if not isinstance(flip, bool):
            raise TypeError(f"flip must be a bool, got {type(flip).__name__} {flip!r}")
        self.flip = flip

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        """Constructor kwargs from a :class:`~detcore.archs.config.Config` (its ``test.aug``) or a
        :class:`~detcore.archs.config.TestAugConfig`: ``DatasetMapperTTA(**DatasetMapperTTA.from_config(cfg))``."""
        from detcore.archs.config import Config, TestAugConfig

        aug = cfg.test.aug if isinstance(cfg, Config) else cfg
        if not isinstance(aug, TestAugConfig):
            raise TypeError(
                f"cfg must be a Config (its test.aug is read) or TestAugConfig, got {type(cfg).__name__}"
            )
        return {"min_sizes": list(aug.min_sizes), "max_size": aug.max_size, "flip": aug.flip}

    def __call__(self, dataset_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Augment one input.

        Args:
            dataset_dict (dict): a model input: ``image`` (Tensor[C, H, W], uint8 or floating, possibly already
                resized from the original image), optional ``height``/``width`` (the original image size; default
                the image's), other keys are copied.

        Returns:
            list[dict]: ``len(min_sizes) * (2 if flip else 1)`` copies of ``dataset_dict``, in the order (size 0,
            size 0 flipped, size 1, ...), each with ``image`` replaced by the augmented image (same dtype and
            device) and ``transforms``: the transforms from the original image (``height`` x ``width``) to that
            image; their ``apply_box`` maps boxes forward and ``inverse()`` maps them back.
        """
        orig_h, orig_w = _check_input_dict(dataset_dict, "dataset_dict")
        image = dataset_dict["image"]
        h, w = int(image.shape[1]), int(image.shape[2])
        # the input may already be resized from the original image: that resize comes first
        pre = [_ResizeTransform(orig_h, orig_w, h, w)] if (h, w) != (orig_h, orig_w) else []
        rest = {k: v for k, v in dataset_dict.items() if k != "image"}
        ret = []
        for min_size in self.min_sizes:
            new_h, new_w = _shortest_edge_size(h, w, min_size, self.max_size)
            resize = _ResizeTransform(h, w, new_h, new_w)
            resized = resize.apply_image(image)
            candidates = [(resized, [resize])]
            if self.flip:
                hflip = _HFlipTransform(new_w)
                candidates.append((hflip.apply_image(resized), [resize, hflip]))
            for img, tfms in candidates:
                dic = copy.deepcopy(rest)
                dic["image"] = img
                dic["transforms"] = _TransformList([*pre, *tfms])
                ret.append(dic)
        return ret


# ----------------------------------------------------------------------------------------------------------
# the model wrapper


def _is_hflip(t: Any) -> bool:
    # also detcore.engine's / detectron2's HFlipTransform in the transforms of a custom tta_mapper
    return isinstance(t, _HFlipTransform) or type(t).__name__ == "HFlipTransform"


def _transform_boxes(tfm: Any, boxes: Tensor) -> Tensor:
    """``tfm.apply_box`` on ``boxes (Tensor[N, 4])``: tensors for this module's transforms, numpy arrays for
    others (detectron2's and detcore.engine's interface)."""
    if isinstance(tfm, _Transform):
        return tfm.apply_box(boxes)
    out = tfm.apply_box(boxes.detach().cpu().numpy())
    return torch.as_tensor(np.asarray(out), dtype=boxes.dtype, device=boxes.device).reshape(-1, 4)


class GeneralizedRCNNWithTTA(nn.Module):
    """A :class:`GeneralizedRCNN` with test-time augmentation (detectron2's ``GeneralizedRCNNWithTTA``); calling
    it has the same inputs and outputs as the model's inference.

    Per image: the ``tta_mapper`` makes the augmented inputs; the model detects boxes on each (mask and keypoint
    branches off); the boxes are mapped back to the original image and merged by per-class NMS (the model's
    test NMS threshold and detections per image, as its box predictor, the last one for cascades). For Mask
    R-CNN the mask branch then runs on the merged boxes mapped into every augmented input, the mask
    probabilities (mirrored back for flipped inputs) are averaged and pasted into the original image.

    Args:
        cfg (Config | None): the config; ``cfg.test.aug`` builds the default mapper (may be None when
            ``tta_mapper`` is given).
        model (GeneralizedRCNN): the model (a ``DistributedDataParallel`` is unwrapped). Keypoint models,
            rotated-box ROI heads and precomputed proposals are not supported.
        tta_mapper (callable | None): dict -> list of augmented dicts, each with ``transforms`` (``apply_box``
            of XYXY boxes and ``inverse()``, as :class:`DatasetMapperTTA`'s; only resizes and horizontal flips,
            as in detectron2: the box-relative masks are mirrored back for flips and need nothing else). Default:
            ``DatasetMapperTTA(**DatasetMapperTTA.from_config(cfg))``.
        batch_size (int): augmented inputs per model call.
    """

    def __init__(
        self,
        cfg: Any,
        model: nn.Module,
        tta_mapper: Callable[[Mapping[str, Any]], list[dict[str, Any]]] | None = None,
        batch_size: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(
                f"model must be a GeneralizedRCNN (TTA merges R-CNN box detections and re-runs its mask branch), "
                f"got {type(model).__name__}"
            )
        roi_heads = model.roi_heads
        if getattr(roi_heads, "keypoint_on", False):
            raise NotImplementedError(
                "TTA of keypoint models is not supported: mapping keypoints back from a flipped input needs the "
                "dataset's left/right keypoint pairs (a flip turns a left keypoint into a right one), which the "
                "model does not know"
            )
        if model.proposal_generator is None:
            raise NotImplementedError(
                "TTA with precomputed proposals is not supported: the proposals would have to be transformed "
                "into every augmented input"
            )
        from detcore.heads import RROIHeads

        if isinstance(roi_heads, RROIHeads):
            raise NotImplementedError("TTA of rotated-box ROI heads (RROIHeads) is not supported")
        predictor = roi_heads.box_predictor
        if isinstance(predictor, nn.ModuleList):  # cascade: the last stage's test settings
            predictor = predictor[-1]
        self.nms_thresh = float(predictor.test_nms_thresh)
        self.detections_per_image = int(predictor.test_topk_per_image)
        self.num_classes = int(roi_heads.num_classes)

        if tta_mapper is None:
            if cfg is None:
                raise TypeError(
                    "cfg must be a Config (its test.aug builds the default mapper) when tta_mapper is None"
                )
            tta_mapper = DatasetMapperTTA(**DatasetMapperTTA.from_config(cfg))
        elif not callable(tta_mapper):
            raise TypeError(
                f"tta_mapper must be callable (dict -> list of dicts), got {type(tta_mapper).__name__}"
            )
        self.cfg = cfg
        self.model = model
        self.tta_mapper = tta_mapper
        self.batch_size = _positive_int(batch_size, "batch_size")

    @contextmanager
    def _turn_off_roi_heads(self, attrs: Sequence[str]) -> Iterator[None]:
        """Temporarily set the ROI heads' ``attrs`` (e.g. ``mask_on``) that exist to False."""
        roi_heads = self.model.roi_heads
        old = {a: getattr(roi_heads, a) for a in attrs if hasattr(roi_heads, a)}
        for a in old:
            setattr(roi_heads, a, False)
        try:
            yield
        finally:
            for a, v in old.items():
                setattr(roi_heads, a, v)

    def _batch_inference(
        self,
        batched_inputs: Sequence[Mapping[str, Any]],
        detected_instances: Sequence[Instances] | None = None,
    ) -> list[Instances]:
        """The model's raw inference (``do_postprocess=False``) in batches of ``batch_size``."""
        outputs: list[Instances] = []
        for start in range(0, len(batched_inputs), self.batch_size):
            inputs = list(batched_inputs[start : start + self.batch_size])
            given = (
                None
                if detected_instances is None
                else list(detected_instances[start : start + self.batch_size])
            )
            outputs.extend(self.model.inference(inputs, given, do_postprocess=False))
        return outputs

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Instances]]:
        """Detect with test-time augmentation.

        Args:
            batched_inputs (list[dict]): as :meth:`GeneralizedRCNN.forward` in inference: ``image``
                (Tensor[C, H, W]) and optional ``height``/``width`` (the output resolution; default the image's).

        Returns:
            list[dict]: per image ``{"instances": Instances}`` in the ``height`` x ``width`` frame with
            ``pred_boxes``, ``scores``, ``pred_classes`` (sorted by decreasing score) and for mask models
            ``pred_masks`` (Tensor[N, height, width] bool).
        """
        if not isinstance(batched_inputs, (list, tuple)):
            raise TypeError(
                f"batched_inputs must be a list of dicts with an 'image' Tensor[C, H, W], got "
                f"{type(batched_inputs).__name__}"
            )
        if self.model.training:
            raise RuntimeError("GeneralizedRCNNWithTTA is for inference (call eval() first)")
        ret = []
        for i, x in enumerate(batched_inputs):
            height, width = _check_input_dict(x, f"batched_inputs[{i}]")
            x = dict(x)
            x["height"], x["width"] = height, width
            ret.append(self._inference_one_image(x))
        return ret

    def _inference_one_image(self, inp: dict[str, Any]) -> dict[str, Instances]:
        orig_shape = (inp["height"], inp["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(inp)
        # boxes of every augmented input, with the mask / keypoint branches off
        with self._turn_off_roi_heads(["mask_on", "keypoint_on"]):
            all_boxes, all_scores, all_classes = self._get_augmented_boxes(augmented_inputs, tfms)
        merged = self._merge_detections(all_boxes, all_scores, all_classes, orig_shape)
        if not getattr(self.model.roi_heads, "mask_on", False):
            return {"instances": merged}
        # masks of the merged boxes on every augmented input, averaged
        augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
        outputs = self._batch_inference(augmented_inputs, augmented_instances)
        del augmented_inputs, augmented_instances
        merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        return {"instances": detector_postprocess(merged, *orig_shape)}

    def _get_augmented_inputs(self, inp: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
        augmented = self.tta_mapper(inp)
        if not isinstance(augmented, (list, tuple)) or len(augmented) == 0:
            raise ValueError(
                f"tta_mapper must return a non-empty list of input dicts, got "
                f"{type(augmented).__name__}" + (" (empty)" if isinstance(augmented, (list, tuple)) else "")
            )
        inputs, tfms = [], []
        for i, a in enumerate(augmented):
            _check_input_dict(a, f"tta_mapper output [{i}]")
            a = dict(a)
            tfm = a.pop("transforms", None)
            if not (hasattr(tfm, "apply_box") and hasattr(tfm, "inverse")):
                raise TypeError(
                    f"tta_mapper output [{i}] must have 'transforms' with apply_box() and inverse() (as "
                    f"DatasetMapperTTA's), got {type(tfm).__name__}"
                )
            inputs.append(a)
            tfms.append(tfm)
        return inputs, tfms

    def _get_augmented_boxes(
        self, augmented_inputs: list[dict[str, Any]], tfms: list[Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self._batch_inference(augmented_inputs)
        all_boxes, all_scores, all_classes = [], [], []
        for output, tfm in zip(outputs, tfms):
            if not isinstance(output.pred_boxes, Boxes) or output.pred_boxes.tensor.shape[1] != 4:
                raise NotImplementedError(f"TTA needs XYXY Boxes, got {type(output.pred_boxes).__name__}")
            # back to the original image
            all_boxes.append(_transform_boxes(tfm.inverse(), output.pred_boxes.tensor))
            all_scores.append(output.scores)
            all_classes.append(output.pred_classes)
        return torch.cat(all_boxes, dim=0), torch.cat(all_scores, dim=0), torch.cat(all_classes, dim=0)

    def _merge_detections(
        self, all_boxes: Tensor, all_scores: Tensor, all_classes: Tensor, shape_hw: tuple[int, int]
    ) -> Instances:
        """Per-class NMS of the union: each detection becomes a row of scores (its class's score, 0 elsewhere,
        background column last) for :func:`fast_rcnn_inference_single_image`."""
        num_boxes = len(all_boxes)
        all_scores_2d = torch.zeros(
            num_boxes, self.num_classes + 1, dtype=all_scores.dtype, device=all_boxes.device
        )
        all_scores_2d[torch.arange(num_boxes, device=all_boxes.device), all_classes] = all_scores
        merged, _ = fast_rcnn_inference_single_image(
            all_boxes,
            all_scores_2d,
            shape_hw,
            _MERGE_SCORE_THRESH,
            self.nms_thresh,
            self.detections_per_image,
        )
        return merged

    def _rescale_detected_boxes(
        self, augmented_inputs: list[dict[str, Any]], merged: Instances, tfms: list[Any]
    ) -> list[Instances]:
        """The merged detections in the frame of every augmented input."""
        augmented_instances = []
        for inp, tfm in zip(augmented_inputs, tfms):
            boxes = _transform_boxes(tfm, merged.pred_boxes.tensor)
            augmented_instances.append(
                Instances(
                    tuple(int(v) for v in inp["image"].shape[1:3]),
                    pred_boxes=Boxes(boxes),
                    pred_classes=merged.pred_classes,
                    scores=merged.scores,
                )
            )
        return augmented_instances

    def _reduce_pred_masks(self, outputs: list[Instances], tfms: list[Any]) -> Tensor:
        """Mean of the mask probabilities (Tensor[N, 1, M, M]) over the augmented inputs; the masks of flipped
        inputs are mirrored back first (masks are box-relative, so resizes need nothing)."""
        masks = []
        for output, tfm in zip(outputs, tfms):
            m = output.pred_masks
            steps = getattr(tfm, "transforms", [tfm])
            if sum(_is_hflip(t) for t in steps) % 2 == 1:
                m = m.flip(dims=[3])
            masks.append(m)
        return torch.stack(masks, dim=0).mean(dim=0)
