"""Inference-only optimisation of a built detcore model: :func:`optimize_for_inference`.

What it does (in place, to a model in eval mode):

1. **Norm folding.** Every ``FrozenBatchNorm2d`` or eval-mode ``BatchNorm2d`` that is the ``norm`` of a
   detcore :class:`~detcore.ops.Conv2d` (backbone stem and blocks, FPN and heads where their config has
   norms) is folded into the convolution: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with
   ``s = gamma / sqrt(var + eps)``, computed in float64. Other norms (GroupNorm, ...) are kept.
2. **Channels-last.** Every 4-D parameter and buffer is converted to ``torch.channels_last``; the
   convolutions then produce channels-last (NHWC) feature maps, for which oneDNN's CPU kernels (and GPU
   tensor-core kernels) are faster. Values are unchanged; every downstream op (ROIAlign, interpolation,
   reshapes) handles either layout.
3. **Fused conv + bias + ReLU (+ residual add) on CPU.** A convolution directly followed by a ReLU (the
   ReLUs inside ResNet blocks and the stem, ``Conv2d(activation=ReLU)`` in the RPN and mask heads,
   ``Conv2d`` + ``ReLU`` pairs in ``nn.Sequential`` subnets such as RetinaNet's), and the last conv of a
   residual block with its shortcut add and ReLU, run as one oneDNN primitive
   (``torch.ops.mkldnn._convolution_pointwise``) for float32 CPU inputs without autograd; elsewhere (CUDA,
   other dtypes, empty batches, tensors requiring grad) the same module computes the unfused
   ``F.conv2d`` -> add -> ReLU sequence.
4. **Winograd F(4x4, 3x3) on CPU** (``winograd=True``, the default). Wide 3x3 stride-1 convolutions (at
   least 128 input and output channels: ResNet res3-res5 ``conv2``, FPN outputs, RPN / RetinaNet / mask head
   convs) on maps of at least 24 4x4 tiles run as :func:`detcore.ops.conv3x3_winograd` (bias and ReLU
   fused): 4x fewer multiplications, measured x1.7-2.4 faster per convolution than oneDNN's direct kernel
   on this project's 2-core benchmark machine. The transformed weights are cached per conv and rebuilt
   when the weight changes; they take 4x the memory of the weights they come from (R-50-FPN RetinaNet:
   ~310 MB more peak memory at 800x1333, see BENCHMARKS.md; ``winograd=False`` avoids it). Rounding error
   is about 4x the direct convolution's (~1e-5 of the output's magnitude).

Pixel normalisation is *not* folded into the first convolution: the model pads the normalised image
with zeros (``ImageList.from_tensors``), so a folded mean would change the values the stem sees in the
padding (and the zero-padding of the 7x7 conv itself), breaking equality with the original model.

Outputs equal the unoptimised model's within float32 rounding (about 1e-5 relative on the features, a few
1e-5 with Winograd; detections are the same up to near-ties of scores).

The optimised model is for inference only:

- ``model.train()`` (or ``train()`` on a fused submodule) raises ``RuntimeError``; ``model.eval()`` works.
- Its ``state_dict()`` holds the *folded* convolution weights and biases and no ``*.norm.*`` entries (so it
  does not load into an unoptimised model); the *original* checkpoint keys still load into it:
  ``model.load_state_dict(original_state_dict)`` (or :func:`detcore.archs.load_checkpoint`) folds the
  ``<conv>.norm.*`` entries into the given ``<conv>.weight`` on the fly.
- Its parameters have ``requires_grad=False``.

Example::

    from detcore.archs import build_model, get_config, load_checkpoint, optimize_for_inference

    model = build_model(get_config("mask_rcnn_R_50_FPN")).eval()
    load_checkpoint(model, "model_final.pkl")
    model = optimize_for_inference(model)
    with torch.no_grad():
        outputs = model([{"image": image}])
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detcore.backbones.resnet import BasicBlock, BasicStem, BottleneckBlock
from detcore.ops import Conv2d, FrozenBatchNorm2d, conv3x3_winograd, winograd_weight

__all__ = ["fold_checkpoint_state", "is_optimized_for_inference", "optimize_for_inference"]

_FLAG = "_detcore_optimized_for_inference"

# Winograd F(4x4, 3x3) replaces oneDNN's direct 3x3 convolution where it was measured faster (2-core AMD
# EPYC, float32, see BENCHMARKS.md): at least 128 input and output channels (x1.7-2.0; 64 channels gain
# only ~x1.1) and at least 24 output tiles of 4x4 (a 7x11 map of 6 tiles runs x0.85).
_WINOGRAD_MIN_CHANNELS = 128
_WINOGRAD_MIN_TILES = 24
_TRAIN_ERROR = (
    "this model was optimised for inference by detcore.archs.optimize_for_inference (norms folded into "
    "convolutions) and cannot be trained; build a fresh model (and load the original checkpoint) to train"
)


@functools.cache
def _has_fused_conv() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _mkldnn_available() -> bool:
    return torch.backends.mkldnn.enabled and _has_fused_conv()


def _fold_tensors(
    weight: Tensor,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Folded (weight, bias) of ``norm(conv(x))``, computed in float64, returned in ``weight``'s dtype."""
    dtype = weight.dtype
    mean64 = mean.detach().double()
    scale = (var.detach().double() + eps).rsqrt()
    if gamma is not None:
        scale = scale * gamma.detach().double()
    shift = -mean64 * scale
    if bias is not None:
        shift = shift + bias.detach().double() * scale
    if beta is not None:
        shift = shift + beta.detach().double()
    new_weight = weight.detach().double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return new_weight.to(dtype), shift.to(dtype)


def _foldable(norm: nn.Module | None) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (
        isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm))
        and not norm.training
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
    )


def _eligible(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 4
        and x.numel() > 0
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and _mkldnn_available()
    )


class _InferenceConvMixin:
    """Forward of a folded, optionally ReLU-fused convolution (mixed into Conv2d / nn.Conv2d subclasses)."""

    _fused_relu: bool
    _folded_eps: float | None  # eps of the folded norm (None: nothing folded)

    def _setup(self, fused_relu: bool, folded_eps: float | None, winograd: bool) -> None:
        self._fused_relu = fused_relu
        self._folded_eps = folded_eps
        self._winograd = winograd and self._winograd_shape()
        self._winograd_cache: tuple[tuple[int, int], Tensor] | None = None

    def _winograd_shape(self) -> bool:
        """A 3x3 / stride 1 / padding 1 conv wide enough for Winograd F(4x4, 3x3) to beat oneDNN."""
        return (
            tuple(self.kernel_size) == (3, 3)  # type: ignore[attr-defined]
            and tuple(self.stride) == (1, 1)  # type: ignore[attr-defined]
            and tuple(self.padding) == (1, 1)  # type: ignore[attr-defined]
            and tuple(self.dilation) == (1, 1)  # type: ignore[attr-defined]
            and self.groups == 1  # type: ignore[attr-defined]
            and self.padding_mode == "zeros"  # type: ignore[attr-defined]
            and self.in_channels >= _WINOGRAD_MIN_CHANNELS  # type: ignore[attr-defined]
            and self.out_channels >= _WINOGRAD_MIN_CHANNELS  # type: ignore[attr-defined]
        )

    def _winograd_ok(self, x: Tensor) -> bool:
        if not (self._winograd and getattr(self, "norm", None) is None and _eligible(x, self.weight)):  # type: ignore[attr-defined]
            return False
        n, _, h, w = x.shape
        return n * ((h + 3) // 4) * ((w + 3) // 4) >= _WINOGRAD_MIN_TILES

    def _winograd_weight(self) -> Tensor:
        """The transformed weight, recomputed when the weight changes (load_state_dict bumps its version)."""
        weight = self.weight  # type: ignore[attr-defined]
        key = (weight.data_ptr(), weight._version)
        if self._winograd_cache is None or self._winograd_cache[0] != key:
            self._winograd_cache = (key, winograd_weight(weight))
        return self._winograd_cache[1]

    def _mkldnn_ok(self, x: Tensor) -> bool:
        return (
            self.padding_mode == "zeros"  # type: ignore[attr-defined]
            and not isinstance(self.padding, str)  # type: ignore[attr-defined]
            and _eligible(x, self.weight)  # type: ignore[attr-defined]
        )

    def _conv(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x,
            self.weight,  # type: ignore[attr-defined]
            self.bias,  # type: ignore[attr-defined]
            self.stride,  # type: ignore[attr-defined]
            self.padding,  # type: ignore[attr-defined]
            self.dilation,  # type: ignore[attr-defined]
            self.groups,  # type: ignore[attr-defined]
        )

    def _pointwise(self, x: Tensor, attr: str) -> Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x.contiguous(memory_format=torch.channels_last),
            self.weight,  # type: ignore[attr-defined]
            self.bias,  # type: ignore[attr-defined]
            list(self.padding),  # type: ignore[attr-defined]
            list(self.stride),  # type: ignore[attr-defined]
            list(self.dilation),  # type: ignore[attr-defined]
            self.groups,  # type: ignore[attr-defined]
            attr,
            [],
            "",
        )

    def _post(self, x: Tensor) -> Tensor:
        """The layers after the conv that are not fused: the kept norm and a non-ReLU activation."""
        norm = getattr(self, "norm", None)
        if norm is not None:
            x = norm(x)
        activation = getattr(self, "activation", None)
        if activation is not None and not self._fused_relu:
            x = activation(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self._winograd_ok(x):
            y = conv3x3_winograd(x, self._winograd_weight(), self.bias, self._fused_relu)  # type: ignore[attr-defined]
            return self._post(y)
        if getattr(self, "norm", None) is None and self._mkldnn_ok(x):
            y = self._pointwise(x, "relu" if self._fused_relu else "none")
            return self._post(y)
        y = self._post(self._conv(x))
        return F.relu(y) if self._fused_relu else y

    def forward_add_relu(self, x: Tensor, other: Tensor) -> Tensor:
        """``relu(self(x) + other)`` (the last conv of a residual block with its shortcut)."""
        if (
            getattr(self, "norm", None) is None
            and getattr(self, "activation", None) is None
            and not self._fused_relu
            and self._mkldnn_ok(x)
            and other.dim() == 4
            and other.shape[1] == self.out_channels  # type: ignore[attr-defined]
        ):
            other = other.contiguous(memory_format=torch.channels_last)
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x.contiguous(memory_format=torch.channels_last),
                other,
                self.weight,  # type: ignore[attr-defined]
                self.bias,  # type: ignore[attr-defined]
                list(self.padding),  # type: ignore[attr-defined]
                list(self.stride),  # type: ignore[attr-defined]
                list(self.dilation),  # type: ignore[attr-defined]
                self.groups,  # type: ignore[attr-defined]
                "add",
                1.0,
                "relu",
                [],
                "",
            )
            return y
        out = self.forward(x)
        out = out + other
        return F.relu_(out)

    def train(self, mode: bool = True):  # type: ignore[override]
        if mode:
            raise RuntimeError(_TRAIN_ERROR)
        return super().train(False)  # type: ignore[misc]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # An original (unfolded) checkpoint: fold its "<prefix>norm.*" entries into the given weight/bias.
        unexpected_keys.extend(_fold_checkpoint_entries(self, state_dict, prefix))
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


_NORM_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _fold_checkpoint_entries(conv: _InferenceConvMixin, state: dict[str, Tensor], prefix: str) -> list[str]:
    """Replace an original checkpoint's ``<prefix>weight``/``bias``/``norm.*`` by the folded weight and bias,
    in ``state`` (in place), when ``conv`` had its norm folded and ``state`` holds the norm's statistics.

    Returns:
        list[str]: keys under ``<prefix>norm.`` that are not norm entries (removed; unexpected).
    """
    norm_prefix = prefix + "norm."
    if conv._folded_eps is None or norm_prefix + "running_var" not in state:
        return []
    norm = {n: state.pop(norm_prefix + n) for n in _NORM_ENTRIES if norm_prefix + n in state}
    others = [k for k in state if k.startswith(norm_prefix)]
    for key in others:
        state.pop(key)
    if prefix + "weight" in state and "running_mean" in norm:
        state[prefix + "weight"], state[prefix + "bias"] = _fold_tensors(
            state[prefix + "weight"],
            state.get(prefix + "bias"),
            norm["running_mean"],
            norm["running_var"],
            norm.get("weight"),
            norm.get("bias"),
            conv._folded_eps,
        )
    return others


def fold_checkpoint_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An original (unfolded) checkpoint state dict in the names and values of an optimised model.

    For every convolution whose norm :func:`optimize_for_inference` folded, the checkpoint's
    ``<conv>.weight`` (and ``<conv>.bias``) and ``<conv>.norm.*`` entries become the folded weight and bias;
    other entries are kept. A state dict without norm entries (e.g. an optimised model's own) is returned
    unchanged.

    Args:
        model (nn.Module): a model optimised by :func:`optimize_for_inference`.
        state (dict[str, Tensor]): checkpoint name -> tensor.

    Returns:
        dict[str, Tensor]: a new dict (``state`` is not modified).
    """
    out = dict(state)
    for name, m in model.named_modules():
        if isinstance(m, _InferenceConvMixin):
            _fold_checkpoint_entries(m, out, f"{name}." if name else "")
    return out


class _InferenceConv2d(_InferenceConvMixin, Conv2d):
    """A detcore ``Conv2d`` after :func:`optimize_for_inference` (inference only)."""


class _InferenceTorchConv2d(_InferenceConvMixin, nn.Conv2d):
    """A ``torch.nn.Conv2d`` after :func:`optimize_for_inference` (inference only)."""


def _convert_conv(conv: nn.Conv2d, winograd: bool) -> None:
    """Fold ``conv.norm`` (if foldable) and swap the class to its inference counterpart, in place."""
    folded_eps = None
    if isinstance(conv, Conv2d):
        norm = conv.norm
        if _foldable(norm):
            weight, bias = _fold_tensors(
                conv.weight,
                conv.bias,
                norm.running_mean,
                norm.running_var,
                norm.weight,
                norm.bias,
                float(norm.eps),
            )
            conv.weight = nn.Parameter(weight, requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            conv.norm = None
            folded_eps = float(norm.eps)
        fused_relu = conv.norm is None and _is_relu(conv.activation)
        conv.__class__ = _InferenceConv2d
    else:
        fused_relu = False
        conv.__class__ = _InferenceTorchConv2d
    conv._setup(fused_relu=fused_relu, folded_eps=folded_eps, winograd=winograd)


def _is_relu(fn: Any) -> bool:
    if isinstance(fn, nn.ReLU):
        return True
    return fn is F.relu or fn is F.relu_ or fn is torch.relu or fn is torch.relu_


def _fuse_sequential_relus(seq: nn.Sequential) -> None:
    """In ``Sequential(..., conv, ReLU, ...)`` fuse the ReLU into the conv (the ReLU slot becomes Identity)."""
    for i in range(len(seq) - 1):
        conv, nxt = seq[i], seq[i + 1]
        if (
            isinstance(conv, _InferenceConvMixin)
            and isinstance(nxt, nn.ReLU)
            and getattr(conv, "norm", None) is None
            and getattr(conv, "activation", None) is None
            and not conv._fused_relu
        ):
            conv._fused_relu = True
            seq[i + 1] = nn.Identity()


def _bottleneck_forward(self: nn.Module, x: Tensor) -> Tensor:
    out = self.conv1(x)  # ReLU fused
    out = self.conv2(out)  # ReLU fused
    shortcut = self.shortcut(x) if self.shortcut is not None else x
    return self.conv3.forward_add_relu(out, shortcut)


def _basic_forward(self: nn.Module, x: Tensor) -> Tensor:
    out = self.conv1(x)  # ReLU fused
    shortcut = self.shortcut(x) if self.shortcut is not None else x
    return self.conv2.forward_add_relu(out, shortcut)


def _stem_forward(self: nn.Module, x: Tensor) -> Tensor:
    x = self.conv1(x)  # ReLU fused
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _refusing_block_train(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError(_TRAIN_ERROR)
    return nn.Module.train(self, False)


class _InferenceBottleneckBlock(BottleneckBlock):
    """A ResNet ``BottleneckBlock`` after :func:`optimize_for_inference`: convs with fused ReLU and add."""

    forward = _bottleneck_forward
    train = _refusing_block_train


class _InferenceBasicBlock(BasicBlock):
    """A ResNet ``BasicBlock`` after :func:`optimize_for_inference`: convs with fused ReLU and add."""

    forward = _basic_forward
    train = _refusing_block_train


class _InferenceBasicStem(BasicStem):
    """A ResNet ``BasicStem`` after :func:`optimize_for_inference`: conv with fused ReLU."""

    forward = _stem_forward
    train = _refusing_block_train


# block class -> (inference class, names of the convs followed by a ReLU, name of the conv + add + ReLU)
_BLOCKS: dict[type, tuple[type, tuple[str, ...], str | None]] = {
    BottleneckBlock: (_InferenceBottleneckBlock, ("conv1", "conv2"), "conv3"),
    BasicBlock: (_InferenceBasicBlock, ("conv1",), "conv2"),
    BasicStem: (_InferenceBasicStem, ("conv1",), None),
}


def _convert_block(block: nn.Module) -> None:
    """Swap a ResNet block/stem whose ReLUs can all be fused to its inference class, and fuse them."""
    entry = _BLOCKS.get(type(block))
    if entry is None:
        return
    new_class, relu_convs, add_conv = entry
    names = [*relu_convs, *([add_conv] if add_conv else [])]
    convs = [getattr(block, n, None) for n in names]
    if not all(
        isinstance(c, _InferenceConv2d) and c.norm is None and c.activation is None and not c._fused_relu
        for c in convs
    ):
        return  # e.g. an unfoldable norm (GroupNorm): keep the original forward
    for n in relu_convs:
        getattr(block, n)._fused_relu = True
    block.__class__ = new_class


def _refusing_train(model: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError(_TRAIN_ERROR)
    return type(model).train(model, False)


def is_optimized_for_inference(model: nn.Module) -> bool:
    """Whether :func:`optimize_for_inference` was applied to ``model``."""
    return bool(getattr(model, _FLAG, False))


@torch.no_grad()
def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, winograd: bool = True
) -> nn.Module:
    """Make a detcore model faster for inference, in place (see the module docstring for details).

    Folds FrozenBatchNorm2d / eval-mode BatchNorm2d into the convolutions they follow (backbone, FPN and
    heads), converts 4-D weights to channels-last, and fuses conv + bias + ReLU (and the residual add of
    ResNet blocks) into single oneDNN calls on CPU. Outputs equal the unoptimised model's within float32
    rounding. Applying it twice is a no-op.

    Args:
        model (nn.Module): a built detcore model (e.g. from :func:`detcore.archs.build_model`), in eval mode,
            with its weights loaded (loading the original checkpoint afterwards also works).
        channels_last (bool): convert 4-D parameters and buffers to ``torch.channels_last`` (keep True on
            CPU; the fused oneDNN path works with either, but converts the inputs of every conv).
        winograd (bool): run wide 3x3 stride-1 convolutions (>= 128 channels in and out, maps of >= 24
            4x4 tiles) on CPU as Winograd F(4x4, 3x3) (:func:`detcore.ops.conv3x3_winograd`), 4x fewer
            multiplications; rounding error about 4x the direct convolution's (~1e-5 relative). False
            keeps oneDNN's direct convolution everywhere.

    Returns:
        nn.Module: ``model`` itself, now inference-only (``train()`` raises RuntimeError; its
        ``state_dict()`` holds folded weights without ``norm`` entries).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` (or any submodule) is in training mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if is_optimized_for_inference(model):
        return model
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            "model must be in eval mode (call model.eval() first): optimize_for_inference folds the "
            f"running statistics of norms into convolutions; in training mode: {training[:5]}"
        )
    for m in list(model.modules()):
        if type(m) is Conv2d or type(m) is nn.Conv2d:
            _convert_conv(m, winograd)
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential):
            _fuse_sequential_relus(m)
        _convert_block(m)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        for m in model.modules():
            for p in m._parameters.values():
                if p is not None and p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
            for name, b in list(m._buffers.items()):
                if b is not None and b.dim() == 4:
                    m._buffers[name] = b.contiguous(memory_format=torch.channels_last)
    object.__setattr__(model, _FLAG, True)
    model.__dict__["train"] = functools.partial(_refusing_train, model)
    return model
