"""detcore-backbones's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("backbone", "feature extractors: image batch -> dict of named feature maps")
