"""Loads the compiled module ``detcore.ops_cuda._C`` once and keeps the import error.

The module does not link libtorch: its functions take device pointers (``tensor.data_ptr()``), sizes, a
dtype code (0 float32, 1 float64) and the CUDA stream as an integer. Importing it needs no GPU. If it
failed to import, the first CUDA op call raises :class:`CudaKernelsUnavailableError` chained to the
original failure (never a silent fallback).
"""

from __future__ import annotations

from types import ModuleType

import torch

__all__ = ["DTYPE_CODES", "CudaKernelsUnavailableError", "compute_dtype", "dtype_code", "native", "stream_of"]

try:
    from detcore.ops_cuda import _C as _native_module

    _import_error: BaseException | None = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _native_module = None
    _import_error = exc

# Same table as csrc/common.cuh
DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


class CudaKernelsUnavailableError(RuntimeError):
    """The compiled detcore.ops_cuda._C module could not be imported."""


def native() -> ModuleType:
    """The compiled module, or raise chained to why it failed to import."""
    if _native_module is None:
        raise CudaKernelsUnavailableError(
            f"detcore CUDA kernels are unavailable ({_import_error}); reinstall detcore-ops-cuda "
            "(pip install --force-reinstall detcore-ops-cuda)"
        ) from _import_error
    return _native_module


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype (half, bfloat16, float32) computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dtype_code(tensor: torch.Tensor) -> int:
    return DTYPE_CODES[tensor.dtype]


def stream_of(device: torch.device) -> int:
    """The current CUDA stream of ``device`` as an integer (a ``cudaStream_t``)."""
    return torch.cuda.current_stream(device).cuda_stream
