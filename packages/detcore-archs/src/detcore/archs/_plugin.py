"""detcore-archs's own plugin: declares the component kinds this package owns and registers its built-ins."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.declare_kind("meta_arch", "meta-architectures: list of input dicts -> list of output dicts")
    registry.add("meta_arch", "GeneralizedRCNN", "detcore.archs.meta_arch.rcnn:GeneralizedRCNN")
    registry.add("meta_arch", "ProposalNetwork", "detcore.archs.meta_arch.rcnn:ProposalNetwork")
    registry.add("meta_arch", "RetinaNet", "detcore.archs.meta_arch.retinanet:RetinaNet")
