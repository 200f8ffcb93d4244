"""R-CNN meta-architectures: :class:`GeneralizedRCNN` (backbone + proposals + ROI heads) and
:class:`ProposalNetwork` (backbone + proposals), with detectron2's inputs, outputs and state-dict names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import detector_postprocess
from detcore.heads.build import build_component, build_proposal_generator
from detcore.ops import ShapeSpec
from detcore.structures import ImageList, Instances

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]

_IMAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_batched_inputs(batched_inputs: Any, num_channels: int) -> None:
    if not isinstance(batched_inputs, (list, tuple)):
        raise TypeError(
            f"batched_inputs must be a list of dicts with an 'image' Tensor[C, H, W], got "
            f"{type(batched_inputs).__name__}"
        )
    if len(batched_inputs) == 0:
        raise ValueError("batched_inputs must hold at least one image, got an empty list")
    for i, x in enumerate(batched_inputs):
        if not isinstance(x, Mapping) or "image" not in x:
            raise TypeError(f"batched_inputs[{i}] must be a dict with an 'image' key, got {type(x).__name__}")
        img = x["image"]
        if not isinstance(img, Tensor):
            raise TypeError(f"batched_inputs[{i}]['image'] must be a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 3:
            raise ValueError(
                f"batched_inputs[{i}]['image'] must be a Tensor[C, H, W] (rank 3), got shape {list(img.shape)}"
            )
        if img.shape[0] != num_channels:
            raise ValueError(
                f"batched_inputs[{i}]['image'] must have {num_channels} channels (as pixel_mean), "
                f"got shape {list(img.shape)} (images are CHW, not HWC)"
            )
        if img.dtype not in _IMAGE_DTYPES:
            raise TypeError(
                f"batched_inputs[{i}]['image'] must be uint8 or floating (float16/bfloat16/float32/float64), "
                f"got {img.dtype}"
            )
        for key in ("height", "width"):
            if key in x:
                v = x[key]
                v = v.item() if isinstance(v, Tensor) and v.numel() == 1 else v
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                    raise ValueError(f"batched_inputs[{i}]['{key}'] must be a positive int, got {x[key]!r}")


def _output_size(inp: Mapping[str, Any], image_size: tuple[int, int]) -> tuple[Any, Any]:
    return inp.get("height", image_size[0]), inp.get("width", image_size[1])


class _RCNNBase(nn.Module):
    """Shared input handling: normalisation buffers, device, preprocessing."""

    pixel_mean: Tensor
    pixel_std: Tensor

    def _init_pixels(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        mean = torch.tensor([float(v) for v in pixel_mean]).view(-1, 1, 1)
        std = torch.tensor([float(v) for v in pixel_std]).view(-1, 1, 1)
        if mean.shape != std.shape:
            raise ValueError(
                f"pixel_mean and pixel_std must have the same length, got {mean.numel()} and {std.numel()}"
            )
        if mean.numel() == 0:
            raise ValueError("pixel_mean must have one value per input channel, got none")
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _move_to_current_device(self, x: Any) -> Any:
        return x.to(self.device)

    def preprocess_image(self, batched_inputs: Sequence[Mapping[str, Any]]) -> ImageList:
        """Normalise (``(image - pixel_mean) / pixel_std``), pad and batch the input images.

        Returns:
            ImageList: ``tensor`` [N, C, Hp, Wp] (Hp, Wp multiples of the backbone's size divisibility).
        """
        _check_batched_inputs(batched_inputs, self.pixel_mean.shape[0])
        images = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    @staticmethod
    def _backbone_from_config(cfg: Any) -> nn.Module:
        return build_component(
            "backbone", cfg.backbone_name, cfg.backbone, ShapeSpec(channels=len(cfg.pixel_mean))
        )


class GeneralizedRCNN(_RCNNBase):
    """Generalized R-CNN: per-image features (backbone), region proposals (proposal generator) and per-region
    prediction (ROI heads), as detectron2's ``GeneralizedRCNN``.

    State-dict names: ``backbone.*``, ``proposal_generator.*``, ``roi_heads.*`` (pixel_mean/std are
    non-persistent buffers, as in detectron2).

    Args:
        backbone (Backbone): features from the normalised, padded batch.
        proposal_generator (nn.Module | None): proposals from the features (None: proposals come with the
            inputs under "proposals").
        roi_heads (nn.Module): detections from features and proposals.
        pixel_mean / pixel_std (list[float]): per-channel normalisation.
        input_format (str): "BGR" or "RGB", the channel order of the inputs (informational).
        vis_period (int): training visualisation period (kept for compatibility; no visualisation is done).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generator: nn.Module | None,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str | None = "BGR",
        vis_period: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        if input_format not in (None, "BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR', 'RGB' or None, got {input_format!r}")
        self.input_format = input_format
        self.vis_period = int(vis_period)
        self._init_pixels(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig``: every component is built by name through the registry."""
        del input_shape
        backbone = cls._backbone_from_config(cfg)
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(
                cfg.proposal_generator, shapes, name=cfg.proposal_generator_name
            ),
            "roi_heads": build_component("roi_heads", cfg.roi_heads_name, cfg.roi_heads, shapes),
            "pixel_mean": cfg.pixel_mean,
            "pixel_std": cfg.pixel_std,
            "input_format": cfg.input_format,
            "vis_period": cfg.vis_period,
        }

    def _proposals(
        self, batched_inputs: Sequence[Mapping[str, Any]], images: ImageList, features: dict[str, Tensor], gt
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        if self.proposal_generator is not None:
            return self.proposal_generator(images, features, gt)
        if any("proposals" not in x for x in batched_inputs):
            raise ValueError(
                "without a proposal_generator every input dict must have precomputed 'proposals' (Instances)"
            )
        return [x["proposals"].to(self.device) for x in batched_inputs], {}

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: a dict of losses; inference: see :meth:`inference`.

        Args:
            batched_inputs (list[dict]): per image ``image`` (Tensor[C, H, W], uint8 or float, in
                ``input_format`` order), optional ``height``/``width`` (output resolution), ``instances``
                (ground truth Instances with ``gt_boxes``, ``gt_classes``, ... in training), ``proposals``.

        Returns:
            dict[str, Tensor] of losses in training; else list[dict] with ``instances`` per image.
        """
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("in training every input dict must have ground-truth 'instances'")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self._proposals(batched_inputs, images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses: dict[str, Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def inference(
        self,
        batched_inputs: Sequence[Mapping[str, Any]],
        detected_instances: Sequence[Instances] | None = None,
        do_postprocess: bool = True,
    ) -> list[dict[str, Instances]] | list[Instances]:
        """Run inference.

        Args:
            batched_inputs: as in :meth:`forward`.
            detected_instances (list[Instances] | None): known detections (``pred_boxes``, ``pred_classes``)
                per image; only the other per-ROI outputs (masks, keypoints) are predicted.
            do_postprocess (bool): rescale to ``height``/``width`` and paste masks (:func:`detector_postprocess`).

        Returns:
            With ``do_postprocess``, ``[{"instances": Instances}]`` in the output resolution; otherwise the raw
            ``list[Instances]`` in the frame of the (resized) input.
        """
        if self.training:
            raise RuntimeError("inference() needs eval mode (call model.eval() first)")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            proposals, _ = self._proposals(batched_inputs, images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            if len(detected_instances) != len(batched_inputs):
                raise ValueError(
                    f"detected_instances must have one Instances per image ({len(batched_inputs)}), "
                    f"got {len(detected_instances)}"
                )
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        if do_postprocess:
            if torch.jit.is_scripting():
                raise RuntimeError("scripting is not supported for postprocess")
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results

    @staticmethod
    def _postprocess(
        instances: Sequence[Instances],
        batched_inputs: Sequence[Mapping[str, Any]],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Instances]]:
        """Rescale the outputs to the resolution each input dict asks for (``height``/``width``)."""
        processed = []
        for results_per_image, input_per_image, image_size in zip(instances, batched_inputs, image_sizes):
            height, width = _output_size(input_per_image, image_size)
            processed.append({"instances": detector_postprocess(results_per_image, height, width)})
        return processed


class ProposalNetwork(_RCNNBase):
    """A meta-architecture that only predicts object proposals (detectron2's ``ProposalNetwork``).

    State-dict names: ``backbone.*``, ``proposal_generator.*``.

    Args:
        backbone (Backbone), proposal_generator (nn.Module), pixel_mean / pixel_std (list[float]).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generator: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ) -> None:
        super().__init__()
        if proposal_generator is None:
            raise ValueError("ProposalNetwork needs a proposal_generator, got None")
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self._init_pixels(pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any = None) -> dict[str, Any]:
        """Constructor kwargs from a ``ModelConfig`` (its ROI heads are ignored)."""
        del input_shape
        backbone = cls._backbone_from_config(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(
                cfg.proposal_generator, backbone.output_shape(), name=cfg.proposal_generator_name
            ),
            "pixel_mean": cfg.pixel_mean,
            "pixel_std": cfg.pixel_std,
        }

    def forward(self, batched_inputs: Sequence[Mapping[str, Any]]) -> Any:
        """Training: the RPN losses; inference: ``[{"proposals": Instances}]`` (``proposal_boxes``,
        ``objectness_logits``) rescaled to each input's ``height``/``width``."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("in training every input dict must have ground-truth 'instances'")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        else:
            gt_instances = None
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return proposal_losses
        processed = []
        for results_per_image, input_per_image, image_size in zip(
            proposals, batched_inputs, images.image_sizes
        ):
            height, width = _output_size(input_per_image, image_size)
            processed.append({"proposals": detector_postprocess(results_per_image, height, width)})
        return processed
