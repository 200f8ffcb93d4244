"""detcore's plugin API: entry points (group ``detcore``) + pluggy + a typed component registry.

A distribution exposes its components with one entry point::

    [project.entry-points.detcore]
    my_plugin = "my_package.detcore_plugin"

and that module implements the hook::

    from detcore.plugins import hookimpl

    @hookimpl
    def detcore_register_components(registry):
        registry.add("backbone", "my_backbone", "my_package.model:MyBackbone")

Nothing is imported or registered at import time: the first :func:`get_component` or
:func:`list_components` builds the manager. detcore's own packages register their built-ins the same way.
"""

from __future__ import annotations

import pluggy

from detcore.plugins.errors import (
    DuplicateComponentError,
    PluginError,
    PluginLoadError,
    UnknownComponentError,
    UnknownKindError,
)
from detcore.plugins.hookspecs import PROJECT
from detcore.plugins.manager import (
    ENTRY_POINT_GROUP,
    PluginInfo,
    PluginManager,
    get_plugin_manager,
    reset_plugin_manager,
)
from detcore.plugins.registry import ComponentEntry, ComponentRegistry, Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "ComponentEntry",
    "ComponentRegistry",
    "DuplicateComponentError",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginManager",
    "Provider",
    "UnknownComponentError",
    "UnknownKindError",
    "get_component",
    "get_plugin_manager",
    "hookimpl",
    "list_components",
    "reset_plugin_manager",
]

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marker for hook implementations in plugin modules."""


def get_component(kind: str, name: str):
    """The class or factory registered as ``name`` of ``kind`` (see :meth:`PluginManager.get`)."""
    return get_plugin_manager().get(kind, name)


def list_components(kind: str | None = None) -> list[ComponentEntry]:
    """Every registered component (of one kind, if given), sorted by kind and name."""
    return get_plugin_manager().registry.entries(kind)
