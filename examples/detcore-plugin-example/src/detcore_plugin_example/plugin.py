"""The plugin module named by this distribution's ``detcore`` entry point."""

from detcore.plugins import hookimpl


@hookimpl
def detcore_register_components(registry):
    registry.add("backbone", "tiny_convnet", "detcore_plugin_example.backbone:TinyConvNet")
    registry.add("roi_heads", "center_roi_heads", "detcore_plugin_example.roi_heads:CenterROIHeads")
