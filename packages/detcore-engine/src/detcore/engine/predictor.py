"""``DefaultPredictor``: one image in, the model's outputs out (detectron2's ``DefaultPredictor``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from detcore.archs import Config, build_model, optimize_for_inference
from detcore.engine.data.transforms.augmentation import ResizeShortestEdge

__all__ = ["DefaultPredictor"]


class DefaultPredictor:
    """Build the model of ``cfg``, load ``weights`` and run it on single images.

    The image is resized with ``ResizeShortestEdge(cfg.input.min_size_test, cfg.input.max_size_test)``;
    the model gets the original ``height``/``width`` so its outputs are in original-image pixels.
    The model runs in eval mode under ``torch.no_grad()``, by default after
    :func:`~detcore.archs.optimize_for_inference` (norms folded into convolutions, channels_last, fused
    conv+ReLU on CPU: same outputs within float32 rounding, about 1.4-1.7x faster on CPU); the model is then
    inference-only (``predictor.model.train()`` raises).

    Args:
        cfg: the config (:class:`~detcore.archs.Config`).
        weights: checkpoint file (``.pth`` written by the trainer or :func:`~detcore.archs.save_checkpoint`,
            detectron2 ``.pkl``, ``.safetensors``); None: ``cfg.model.weights`` if set, else random weights.
        device: where the model runs (default: CPU).
        optimize: apply :func:`~detcore.archs.optimize_for_inference` after loading the weights.

    Example::

        predictor = DefaultPredictor(cfg, "output/model_final.pth")
        outputs = predictor(image_bgr)  # {"instances": Instances}
    """

    def __init__(
        self,
        cfg: Config,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        optimize: bool = True,
    ):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a detcore.archs.Config, got {type(cfg).__name__}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = build_model(cfg).to(self.device)
        self.model.eval()
        weights = weights if weights is not None else (cfg.model.weights or None)
        if weights is not None:
            load_weights(self.model, weights)
        if optimize:
            self.model = optimize_for_inference(self.model)
        self.input_format = cfg.model.input_format
        self.aug = ResizeShortestEdge(
            [cfg.input.min_size_test, cfg.input.min_size_test], cfg.input.max_size_test
        )

    def __call__(self, original_image: np.ndarray) -> dict[str, Any]:
        """Run the model on one image.

        Args:
            original_image (ndarray[H, W, 3] uint8): the image in ``cfg.model.input_format`` channel order
                (BGR by default).

        Returns:
            dict: the model's output for the image (e.g. ``{"instances": Instances}`` with boxes in
            original-image pixels).
        """
        if not isinstance(original_image, np.ndarray):
            raise TypeError(
                f"original_image must be a numpy array [H, W, 3] uint8, got {type(original_image).__name__}"
            )
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"original_image must have shape [H, W, 3], got {list(original_image.shape)}")
        if original_image.dtype != np.uint8:
            raise TypeError(f"original_image must be uint8, got dtype {original_image.dtype}")
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self.device)
        with torch.no_grad():
            was_training = self.model.training
            self.model.eval()
            try:
                return self.model([{"image": tensor, "height": height, "width": width}])[0]
            finally:
                self.model.train(was_training)


def load_weights(model: torch.nn.Module, weights: str | os.PathLike) -> None:
    """Load model weights from a trainer checkpoint (``{"model": ..., "optimizer": ...}``) or any file
    :func:`~detcore.archs.load_checkpoint` reads.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the checkpoint's keys or shapes do not match the model.
    """
    from detcore.archs import load_checkpoint

    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} not found")
    if path.endswith((".pth", ".pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
        if not isinstance(state, dict):
            raise ValueError(f"weights file {path!r} does not hold a state dict")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"weights file {path!r} does not match the model: missing {result.missing_keys[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}"
            )
        return
    load_checkpoint(model, path)
