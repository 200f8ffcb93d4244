"""Converters from torchvision and Caffe2/MSRA ImageNet ResNet weights to detcore ResNet state-dict names."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["convert_c2_resnet", "convert_torchvision_resnet", "load_c2_pkl"]


def _as_tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).clone()
    raise TypeError(f"value of {name!r} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


_TV_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_TV_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def convert_torchvision_resnet(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Rename a torchvision ResNet/ResNeXt state dict (``torchvision.models.resnet*``) to detcore's names.

    ``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``; ``layerI.J.convK``/``bnK`` ->
    ``res{I+1}.J.convK``/``.norm``; ``downsample.0``/``downsample.1`` -> ``shortcut``/``shortcut.norm``;
    ``fc`` -> ``linear``. BatchNorm keeps its four tensors (weight, bias, running_mean, running_var), which
    are exactly FrozenBatchNorm2d's buffers; ``num_batches_tracked`` is dropped.

    torchvision puts a bottleneck's stride in its 3x3 conv: build the detcore ResNet with
    ``stride_in_1x1=False`` (and ``num_classes=1000`` to load ``linear``, or drop those keys).

    Args:
        state_dict: torchvision names -> tensors (or numpy arrays).
        prefix: prepended to every output name (e.g. "backbone.bottom_up.").

    Returns:
        dict[str, Tensor]: detcore names -> tensors (copies).

    Raises:
        ValueError: a key that is not part of a torchvision ResNet (named in the message).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        new: str | None = None
        if len(parts) == 2 and parts[0] == "conv1" and parts[1] == "weight":
            new = "stem.conv1.weight"
        elif len(parts) == 2 and parts[0] == "bn1" and parts[1] in _TV_BN_FIELDS:
            new = f"stem.conv1.norm.{parts[1]}"
        elif len(parts) == 2 and parts[0] == "fc" and parts[1] in ("weight", "bias"):
            new = f"linear.{parts[1]}"
        else:
            m = _TV_BLOCK.match(key)
            if m is not None:
                stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
                head = f"res{stage}.{block}."
                mc = re.fullmatch(r"conv(\d)\.weight", rest)
                mb = re.fullmatch(r"bn(\d)\.(\w+)", rest)
                md = re.fullmatch(r"downsample\.([01])\.(\w+)", rest)
                if mc is not None:
                    new = f"{head}conv{mc.group(1)}.weight"
                elif mb is not None and mb.group(2) in _TV_BN_FIELDS:
                    new = f"{head}conv{mb.group(1)}.norm.{mb.group(2)}"
                elif md is not None and md.group(1) == "0" and md.group(2) == "weight":
                    new = f"{head}shortcut.weight"
                elif md is not None and md.group(1) == "1" and md.group(2) in _TV_BN_FIELDS:
                    new = f"{head}shortcut.norm.{md.group(2)}"
        if new is None:
            raise ValueError(f"state_dict key {key!r} is not a torchvision ResNet parameter name")
        out[prefix + new] = _as_tensor(key, value)
    return out


def _c2_name_to_detcore(key: str) -> str | None:
    """A Caffe2/MSRA ResNet blob name -> detcore name (None for blobs without a counterpart)."""
    if key.endswith("_momentum") or key == "lr" or key == "weight_order":
        return None
    if key in ("fc1000_w", "pred_w"):
        return "linear.weight"
    if key in ("fc1000_b", "pred_b"):
        return "linear.bias"
    name = key.replace("_", ".")
    name = re.sub(r"\.w$", ".weight", name)
    name = re.sub(r"\.b$", ".bias", name)
    name = re.sub(r"bn\.s$", "norm.weight", name)
    name = re.sub(r"bn\.bias$", "norm.bias", name)
    name = re.sub(r"bn\.(rm|running\.mean)$", "norm.running_mean", name)
    name = re.sub(r"bn\.(riv|running\.var)$", "norm.running_var", name)
    name = re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", name)
    name = re.sub(r"^conv1\.", "stem.conv1.", name)
    name = name.replace(".branch1.", ".shortcut.")
    name = name.replace(".branch2a.", ".conv1.")
    name = name.replace(".branch2b.", ".conv2.")
    name = name.replace(".branch2c.", ".conv3.")
    return name


_DETCORE_RESNET = re.compile(
    r"^(stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))"
    r"|res\d+\.\d+\.(conv\d|shortcut)\.(weight|bias|norm\.(weight|bias|running_mean|running_var))"
    r"|linear\.(weight|bias))$"
)


def convert_c2_resnet(blobs: Mapping[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Rename Caffe2/MSRA ImageNet ResNet blobs (detectron2's ``R-50.pkl`` etc.) to detcore's names.

    ``conv1_w`` -> ``stem.conv1.weight``; ``res_conv1_bn_s``/``_b`` -> ``stem.conv1.norm.weight``/``bias``;
    ``resS_B_branch2{a,b,c}_w`` -> ``resS.B.conv{1,2,3}.weight`` and their ``_bn_s``/``_bn_b`` ->
    ``.norm.weight``/``.norm.bias``; ``resS_B_branch1_*`` -> ``resS.B.shortcut.*``; ``fc1000_w``/``_b`` ->
    ``linear.weight``/``bias``. Caffe2 stores BatchNorm already folded into a per-channel affine
    (scale ``_s``, shift ``_b``), so each norm gets running_mean 0 and running_var 1, as detectron2 does
    (FrozenBatchNorm2d then computes ``x * s / sqrt(1 + eps) + b``). ``*_momentum`` blobs are dropped.
    MSRA models put the stride in the 1x1 conv: build the ResNet with ``stride_in_1x1=True`` (the default).

    Args:
        blobs: Caffe2 blob name -> numpy array (or tensor), e.g. from :func:`load_c2_pkl`.
        prefix: prepended to every output name.

    Returns:
        dict[str, Tensor]: detcore names -> tensors.

    Raises:
        ValueError: a blob whose name is not part of a Caffe2 ResNet (named in the message).
    """
    out: dict[str, Tensor] = {}
    norms: dict[str, Tensor] = {}
    for key, value in blobs.items():
        new = _c2_name_to_detcore(key)
        if new is None:
            continue
        if _DETCORE_RESNET.match(new) is None:
            raise ValueError(f"blob {key!r} is not a Caffe2 ResNet blob name (it maps to {new!r})")
        tensor = _as_tensor(key, value)
        out[prefix + new] = tensor
        if new.endswith(".norm.weight"):
            norms[new[: -len("weight")]] = tensor
    for norm_prefix, weight in norms.items():
        out.setdefault(prefix + norm_prefix + "running_mean", torch.zeros_like(weight))
        out.setdefault(prefix + norm_prefix + "running_var", torch.ones_like(weight))
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a weights file cannot run code."""

    _ALLOWED = {
        ("_codecs", "encode"),  # bytes in protocol-2 pickles
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a weights pickle: only numpy arrays and dicts are allowed"
        )


def load_c2_pkl(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Read a Caffe2/Detectron-style weights pickle.

    Accepts ``{"blobs": {...}}`` (Caffe2/Detectron ImageNet models), ``{"model": {...}}`` (detectron2
    model-zoo pickles) or a flat dict of arrays; Python-2 pickles are read with latin1 encoding. Only numpy
    arrays and plain containers are unpickled.

    Args:
        path: the ``.pkl`` file.

    Returns:
        dict[str, numpy.ndarray]: blob name -> array.
    """
    with open(path, "rb") as f:
        data = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(data).__name__}")
    for key in ("blobs", "model"):
        if key in data and isinstance(data[key], dict):
            data = data[key]
            break
    return {str(k): v for k, v in data.items() if isinstance(v, np.ndarray)}
