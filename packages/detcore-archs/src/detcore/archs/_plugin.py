"""detcore-archs's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("meta_arch", "meta-architectures: list of input dicts -> list of output dicts")
