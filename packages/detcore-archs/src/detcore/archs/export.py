"""``torch.export`` of R-CNN inference: :class:`ExportableRCNN` (one image in, flat tensors out) and
:func:`export_model` (an ``ExportedProgram`` whose image height and width are dynamic).

Example::

    model = build_model(get_config("mask_rcnn_R_50_FPN")).eval()
    ep = export_model(model, torch.rand(3, 480, 640) * 255)
    boxes, scores, classes, mask_probs = ep.module()(image)  # any H, W multiple of 32 in range

    # with post-processing to an output resolution (dynamic too): bool masks [D, height, width]
    ep = export_model(model, torch.rand(3, 480, 640) * 255, output_size=(600, 800))
    boxes, scores, classes, masks = ep.module()(image, height, width)

The exported graph is the eager inference itself (proposal selection, NMS, ROI heads, mask head): the
data-dependent counts (candidates kept, NMS survivors, detections) are symbolic sizes of the graph, so the
program gives the eager outputs for every image size it accepts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detcore.archs.meta_arch.postprocessing import detector_postprocess
from detcore.archs.meta_arch.rcnn import GeneralizedRCNN

__all__ = ["ExportableRCNN", "export_model"]


class ExportableRCNN(nn.Module):
    """Inference of a :class:`GeneralizedRCNN` on one image, with tensor-only inputs and outputs.

    ``forward(image)`` equals ``model.inference([{"image": image}], do_postprocess=False)[0]`` (detections
    in the frame of ``image``, masks as per-box probabilities), unpacked into a tuple of tensors.

    Args:
        model (GeneralizedRCNN): the model, in eval mode, with a proposal generator.
    """

    def __init__(self, model: GeneralizedRCNN) -> None:
        super().__init__()
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(f"model must be a GeneralizedRCNN, got {type(model).__name__}")
        if model.proposal_generator is None:
            raise ValueError(
                "model must have a proposal_generator (precomputed proposals are not exportable)"
            )
        if getattr(model.roi_heads, "keypoint_on", False):
            raise ValueError("models with a keypoint head are not supported by ExportableRCNN")
        self.model = model
        self.mask_on = bool(getattr(model.roi_heads, "mask_on", False))

    def forward(
        self, image: Tensor, height: int | None = None, width: int | None = None
    ) -> tuple[Tensor, ...]:
        """Detect objects in one image.

        Args:
            image (Tensor[C, H, W]): the image as ``GeneralizedRCNN`` takes it (``input_format`` channel order,
                uint8 or float pixel values).
            height / width (int | None): output resolution (both or neither). When given, the detections are
                post-processed as ``GeneralizedRCNN`` does for an input dict with ``height``/``width``
                (:func:`~detcore.archs.detector_postprocess`: boxes rescaled and clipped, empty boxes
                removed, masks pasted and thresholded).

        Returns:
            pred_boxes (Tensor[D, 4]): XYXY, absolute pixels (of ``image``, or of the output resolution);
            scores (Tensor[D]); pred_classes (Tensor[D] int64); and, for a model with a mask head,
            pred_masks: Tensor[D, 1, M, M] mask probabilities of the predicted class inside each box, or
            with ``height``/``width`` Tensor[D, height, width] bool image masks. Sorted by decreasing score.
        """
        if self.model.training:
            raise RuntimeError("ExportableRCNN needs the model in eval mode (call model.eval() first)")
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(
                f"image must be a Tensor[C, H, W], got {getattr(image, 'shape', type(image).__name__)}"
            )
        if (height is None) != (width is None):
            raise ValueError(
                f"height and width must be given together, got height={height!r}, width={width!r}"
            )
        (result,) = self.model.inference([{"image": image}], do_postprocess=False)
        if height is not None:
            result = detector_postprocess(result, height, width)
        out = (result.pred_boxes.tensor, result.scores, result.pred_classes)
        if self.mask_on:
            out = (*out, result.pred_masks)
        return out


def export_model(
    model: GeneralizedRCNN | ExportableRCNN,
    example_image: Tensor,
    dynamic: bool = True,
    min_size: int = 96,
    max_size: int = 1344,
    output_size: tuple[int, int] | None = None,
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of :class:`ExportableRCNN` on ``example_image``.

    With ``dynamic``, the image height and width are symbolic: any multiple of the backbone's
    ``size_divisibility`` (32 for R-50-FPN; any size when it is 0 or 1) in ``[min_size, max_size]`` is accepted
    (``min_size >= 3 * size_divisibility``: smaller images have a 1-pixel p6, which export specialises).
    Other sizes are rejected by the exported program (pad such images to a multiple first; detections are
    then clipped to the padded size rather than the image size). Sizes that are not
    multiples are not exportable as one program: the reshapes of the padded feature maps produce guards on
    ceil-divisions that the symbolic solver cannot discharge.

    Args:
        model (GeneralizedRCNN | ExportableRCNN): the model (eval mode).
        example_image (Tensor[C, H, W]): an image for tracing; H and W must be allowed sizes.
        dynamic (bool): dynamic height and width (else the program is specialised to the example's size).
        min_size / max_size (int): range of the dynamic height and width, in pixels.
        output_size (tuple[int, int] | None): an example ``(height, width)`` output resolution. When given,
            the program takes ``(image, height, width)`` and post-processes (see :class:`ExportableRCNN`);
            with ``dynamic`` the output height and width are symbolic too (any positive ints).
        strict (bool): passed to ``torch.export.export``.

    Returns:
        torch.export.ExportedProgram: ``program.module()(image)`` (or ``(image, height, width)``) returns what
        :meth:`ExportableRCNN.forward` returns.
    """
    wrapper = model if isinstance(model, ExportableRCNN) else ExportableRCNN(model)
    if not isinstance(example_image, Tensor) or example_image.dim() != 3:
        raise ValueError(
            f"example_image must be a Tensor[C, H, W], got "
            f"{getattr(example_image, 'shape', type(example_image).__name__)}"
        )
    args: tuple[Any, ...] = (example_image,)
    if output_size is not None:
        if (
            not isinstance(output_size, (tuple, list))
            or len(output_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in output_size)
        ):
            raise ValueError(
                f"output_size must be a (height, width) pair of positive ints, got {output_size!r}"
            )
        args = (example_image, int(output_size[0]), int(output_size[1]))
    dynamic_shapes: Any = None
    if dynamic:
        div = max(int(wrapper.model.backbone.size_divisibility), 1)
        # torch.export treats a dynamic size of 1 as a special case: the coarsest feature map (p6 of an FPN,
        # stride 2 * div) must be at least 2 pixels, so images are at least 3 * div pixels
        lowest = 3 * div if div > 1 else 2
        if min_size < lowest or max_size < min_size:
            raise ValueError(
                f"min_size and max_size must satisfy {lowest} <= min_size <= max_size, got {min_size}, {max_size}"
            )
        h, w = (int(s) for s in example_image.shape[1:])
        if h % div or w % div or not (min_size <= h <= max_size and min_size <= w <= max_size):
            raise ValueError(
                f"example_image height and width must be multiples of {div} in [{min_size}, {max_size}], "
                f"got {h}x{w}"
            )
        lo, hi = -(-min_size // div), max_size // div
        if div > 1:
            dims = {
                1: div * torch.export.Dim("h", min=lo, max=hi),
                2: div * torch.export.Dim("w", min=lo, max=hi),
            }
        else:
            dims = {1: torch.export.Dim("h", min=lo, max=hi), 2: torch.export.Dim("w", min=lo, max=hi)}
        dynamic_shapes = {"image": dims}
        if output_size is not None:
            dynamic_shapes.update(height=torch.export.Dim.DYNAMIC, width=torch.export.Dim.DYNAMIC)
    with torch.no_grad():
        return torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes, strict=strict)
