"""detcore.ops_cuda: CUDA kernels for the ``detcore::*`` custom ops, found through the "kernels" plugin kind.

Users never import this package: ``detcore.ops`` functions dispatch CUDA tensors here.
"""

__all__: list[str] = []
