"""CNN building blocks: ``CNNBlockBase`` (the base of backbone blocks) and ``DepthwiseSeparableConv2d``."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from detcore.ops.layers.batch_norm import FrozenBatchNorm2d, get_norm
from detcore.ops.layers.weight_init import c2_msra_fill
from detcore.ops.layers.wrappers import Conv2d

__all__ = ["CNNBlockBase", "DepthwiseSeparableConv2d"]


class CNNBlockBase(nn.Module):
    """A CNN block with known input channels, output channels and stride.

    ``forward`` takes and returns NCHW tensors and may compute anything, but must map ``in_channels`` to
    ``out_channels`` and divide the spatial size by ``stride``. Subclasses' ``__init__`` take these three
    arguments too.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        stride (int): spatial downsampling factor of the block.

    Attributes:
        in_channels (int), out_channels (int), stride (int): as given.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> CNNBlockBase:
        """Make this block not trainable.

        Sets ``requires_grad=False`` on every parameter and converts every BatchNorm2d/SyncBatchNorm
        inside the block to :class:`FrozenBatchNorm2d`, in place.

        Returns:
            CNNBlockBase: the block itself.
        """
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k depthwise convolution followed by a 1 x 1 pointwise convolution.

    Xception applies norm and activation after the second conv only; MobileNet after both. Each conv
    has a bias only when it has no norm. Weights use :func:`c2_msra_fill`.

    Args:
        in_channels (int): input channels (also the depthwise conv's output channels).
        out_channels (int): output channels of the pointwise conv.
        kernel_size (int): depthwise kernel size.
        padding (int): depthwise padding.
        dilation (int): depthwise dilation.
        norm1, norm2 (str | Callable | None): normalization of the two convs (see :func:`get_norm`).
        activation1, activation2 (Callable[[Tensor], Tensor] | None): activations of the two convs.

    Attributes:
        depthwise (Conv2d), pointwise (Conv2d): the two convolutions (state-dict prefixes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        dilation: int = 1,
        *,
        norm1: str | Callable[[int], nn.Module] | None = None,
        activation1: Callable[[Tensor], Tensor] | None = None,
        norm2: str | Callable[[int], nn.Module] | None = None,
        activation2: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.depthwise = Conv2d(
            in_channels,
            in_channels,
            kernel_size=kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=not norm1,
            norm=get_norm(norm1, in_channels),
            activation=activation1,
        )
        self.pointwise = Conv2d(
            in_channels,
            out_channels,
            kernel_size=1,
            bias=not norm2,
            norm=get_norm(norm2, out_channels),
            activation=activation2,
        )
        c2_msra_fill(self.depthwise)
        c2_msra_fill(self.pointwise)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))
