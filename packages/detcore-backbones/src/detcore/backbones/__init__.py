"""detcore.backbones: Backbone API, ResNet/ResNeXt, FPN, weight converters."""

__all__: list[str] = []
