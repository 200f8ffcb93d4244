"""Loads the compiled module ``detcore.ops._C`` once and keeps the import error.

The module does not link libtorch; it takes data pointers (``tensor.data_ptr()``), sizes, a dtype code
and a thread count. A broken install does not break ``import detcore.ops``: the first op call raises
:class:`NativeOpsUnavailableError` chained to the original import failure (never a silent slow path).
"""

from __future__ import annotations

from types import ModuleType

import torch

__all__ = ["DTYPE_CODES", "NativeOpsUnavailableError", "dtype_code", "native", "num_threads"]

try:
    from detcore.ops import _C as _native_module

    _import_error: BaseException | None = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _native_module = None
    _import_error = exc

# Same table as csrc/common/buffer.h
DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


class NativeOpsUnavailableError(RuntimeError):
    """The compiled detcore.ops._C module could not be imported."""


def native() -> ModuleType:
    """The compiled module, or raise chained to why it failed to import."""
    if _native_module is None:
        raise NativeOpsUnavailableError(
            f"detcore.ops native kernels are unavailable ({_import_error}); reinstall detcore-ops "
            "(pip install --force-reinstall detcore-ops)"
        ) from _import_error
    return _native_module


def dtype_code(tensor: torch.Tensor) -> int:
    return DTYPE_CODES[tensor.dtype]


def num_threads() -> int:
    """Threads a CPU kernel may use: torch's intra-op setting."""
    return max(1, torch.get_num_threads())
