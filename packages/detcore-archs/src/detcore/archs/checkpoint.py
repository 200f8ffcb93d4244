"""Loading and saving model weights: detectron2 ``.pth`` / model-zoo ``.pkl`` checkpoints and ``.safetensors``.

Names are used as they are: a detcore model has detectron2's state-dict names, so detectron2 checkpoints load
unchanged. ``.pkl`` files are read with a restricted unpickler that only builds numpy arrays and builtins.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detcore.archs.inference import fold_checkpoint_state, is_optimized_for_inference

__all__ = ["KeyReport", "load_checkpoint", "load_state_dict_file", "save_checkpoint"]


@dataclass
class KeyReport:
    """How a checkpoint's keys matched a model's state dict.

    Attributes:
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys the model lacks.
        shape_mismatched: (name, checkpoint shape, model shape) of keys present in both with different shapes.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every key matched with its shape."""
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def __str__(self) -> str:
        if self.ok:
            return "all keys matched"
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing in the checkpoint: {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} unexpected (not in the model): {', '.join(self.unexpected)}"
            )
        if self.shape_mismatched:
            lines.append(
                f"{len(self.shape_mismatched)} with different shapes: "
                + ", ".join(
                    f"{n} (checkpoint {list(c)}, model {list(m)})" for n, c, m in self.shape_mismatched
                )
            )
        return "; ".join(lines)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy arrays, dtypes, scalars and builtin containers; anything else raises UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a .pkl checkpoint (only numpy arrays and builtins are allowed)"
        )


def _load_pkl(path: Path) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy(order="C"))  # (ascontiguousarray would make 0-d arrays 1-d)
    if isinstance(value, (np.generic, int, float)) and not isinstance(value, bool):
        return torch.as_tensor(np.asarray(value))
    raise ValueError(f"checkpoint entry {name!r} is not a tensor or numpy array (got {type(value).__name__})")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The name -> tensor dict of a checkpoint file.

    Formats (by extension): ``.pth``/``.pt`` (``torch.load(weights_only=True)`` of a name -> tensor dict or
    ``{"model": ...}``), ``.pkl`` (detectron2 model zoo: ``{"model": {name: ndarray}}`` or a plain dict, read
    with a restricted unpickler), ``.safetensors``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    if suffix == ".pkl":
        obj = _load_pkl(path)
    elif suffix in (".pth", ".pt", ".bin"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(
            f"checkpoint {str(path)!r}: unknown format {suffix!r}; expected .pth, .pkl or .safetensors"
        )
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {str(path)!r} must hold a dict name -> tensor, got {type(obj).__name__}"
        )
    return {str(k): _as_tensor(str(k), v) for k, v in obj.items()}


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict(keep_vars=True)


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare a name -> tensor dict with ``model.state_dict()`` (keys and shapes)."""
    own = _model_state(model)
    report = KeyReport()
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            report.shape_mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
    return report


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> KeyReport:
    """Load weights into ``model`` from a ``.pth``, detectron2 ``.pkl`` or ``.safetensors`` file.

    Args:
        model: the model (detectron2 state-dict names); a model optimised by
            :func:`detcore.archs.optimize_for_inference` takes the original checkpoint (its norms are folded
            into the convolutions on the fly).
        path: the checkpoint file.
        strict: raise if any key is missing, unexpected or of another shape (nothing is loaded then);
            otherwise load the keys that match and report the rest.

    Returns:
        KeyReport: what did not match.

    Raises:
        ValueError: in strict mode when the report is not empty (the message holds the report).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    state = load_state_dict_file(path)
    if is_optimized_for_inference(model):
        state = fold_checkpoint_state(model, state)
    report = match_state_dict(model, state)
    if strict and not report.ok:
        raise ValueError(f"checkpoint {str(path)!r} does not match the model: {report}")
    bad = set(report.unexpected) | {n for n, _, _ in report.shape_mismatched}
    own = _model_state(model)
    with torch.no_grad():
        for k, v in state.items():
            if k in bad:
                continue
            target = own[k]
            if target.is_meta:
                raise ValueError(f"model parameter {k!r} is on the meta device; materialise the model first")
            target.copy_(v.to(dtype=target.dtype, device=target.device))
    return report


def save_checkpoint(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Save ``model.state_dict()`` (or a name -> tensor dict) as ``.safetensors``, atomically: written to a
    temporary file in the same directory, then renamed over ``path``."""
    from safetensors.torch import save_file

    if isinstance(model, nn.Module):
        state = model.state_dict()
    elif isinstance(model, Mapping):
        state = dict(model)
    else:
        raise TypeError(f"model must be an nn.Module or a dict name -> tensor, got {type(model).__name__}")
    # safetensors refuses shared storage and non-contiguous tensors: store independent contiguous copies
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else "."
    )
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
