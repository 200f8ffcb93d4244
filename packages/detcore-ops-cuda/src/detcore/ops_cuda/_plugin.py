"""detcore-ops-cuda's plugin: the "cuda" provider of kind "kernels"."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.add("kernels", "cuda", "detcore.ops_cuda.kernels:cuda_kernels")
