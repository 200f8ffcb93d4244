"""detcore-ops' own plugin: declares the "kernels" kind and provides the CPU kernels."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("kernels", "native op implementations for one device type (cpu, cuda)")
    registry.add("kernels", "cpu", "detcore.ops._dispatch:cpu_kernels")
