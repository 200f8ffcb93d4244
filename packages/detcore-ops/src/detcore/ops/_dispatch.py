"""Kernel providers: which implementation of an op runs for a device type.

Every custom op's implementation calls :func:`kernel_for` with the op name and the input device. The CPU
kernels live in this package (``KernelTable("cpu")``); other device types are provided by plugins of kind
"kernels" (``pip install "detcore-ops[cuda]"`` installs the "cuda" provider). Providers are found through
the plugin registry on first use per device type and cached.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CPU_KERNELS", "KernelTable", "MissingKernelError", "cpu_kernels", "kernel_for"]


class MissingKernelError(RuntimeError):
    """No kernel of this op for this device type."""


class KernelTable:
    """A provider: op name -> implementation for one device type."""

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self._fns: dict[str, Callable] = {}

    def register(self, op: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            self._fns[op] = fn
            return fn

        return deco

    def get(self, op: str) -> Callable | None:
        return self._fns.get(op)

    def ops(self) -> list[str]:
        return sorted(self._fns)


CPU_KERNELS = KernelTable("cpu")


def cpu_kernels() -> KernelTable:
    """Factory registered as component ("kernels", "cpu")."""
    return CPU_KERNELS


_providers: dict[str, KernelTable] = {}


def _provider(device_type: str) -> KernelTable:
    table = _providers.get(device_type)
    if table is None:
        from detcore.plugins import UnknownComponentError, get_component

        try:
            factory = get_component("kernels", device_type)
        except UnknownComponentError as exc:
            hint = ' (pip install "detcore-ops[cuda]")' if device_type == "cuda" else ""
            raise MissingKernelError(
                f"no detcore kernels are installed for device type {device_type!r}{hint}"
            ) from exc
        table = factory()
        _providers[device_type] = table
    return table


def kernel_for(op: str, device: torch.device) -> Callable:
    """The implementation of ``op`` for ``device``'s type."""
    table = _provider(device.type)
    fn = table.get(op)
    if fn is None:
        raise MissingKernelError(
            f"the detcore {device.type!r} kernel provider has no kernel for {op!r} (it has: {', '.join(table.ops())})"
        )
    return fn
