"""Hook specifications of the ``detcore`` plugin system.

A plugin is a module named by an entry point in the ``detcore`` group of its distribution's metadata::

    [project.entry-points.detcore]
    convnext = "detcore_convnext.plugin"

and implementing one or more hooks below with the :data:`detcore.plugins.hookimpl` marker. Hookspecs are
public API: new arguments may be added (an implementation may accept a subset of them), none are removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import argparse

    from detcore.plugins.registry import ComponentRegistry

PROJECT = "detcore"
_spec = pluggy.HookspecMarker(PROJECT)


@_spec
def detcore_register_components(registry: ComponentRegistry) -> None:
    """Register components of this plugin.

    Called once per plugin when the plugin manager is built (lazily, on the first lookup or listing).
    Call ``registry.add(kind, name, target)`` for each component, where ``target`` is a class, a factory
    or a lazy ``"module:attr"`` string. A package that owns a kind declares it with
    ``registry.declare_kind(kind, description)``. Returns nothing; not firstresult.
    """


@_spec
def detcore_add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``detcore`` command line.

    Called when ``detcore`` builds its argument parser. Add a parser with ``subparsers.add_parser(name)``
    and set ``func`` with ``parser.set_defaults(func=callable)``; the callable receives the parsed
    namespace and returns an exit code. Returns nothing; not firstresult.
    """
