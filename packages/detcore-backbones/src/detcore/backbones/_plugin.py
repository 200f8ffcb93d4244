"""detcore-backbones's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("backbone", "feature extractors: image batch -> dict of named feature maps")
    registry.add("backbone", "resnet", "detcore.backbones.resnet:build_resnet_backbone")
    registry.add("backbone", "resnet_fpn", "detcore.backbones.fpn:build_resnet_fpn_backbone")
    registry.add(
        "backbone", "retinanet_resnet_fpn", "detcore.backbones.fpn:build_retinanet_resnet_fpn_backbone"
    )
    registry.add("backbone", "fcos_resnet_fpn", "detcore.backbones.fpn:build_fcos_resnet_fpn_backbone")
