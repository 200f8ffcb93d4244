"""The ``detcore`` command line. ``detcore plugins`` lists components; other packages add subcommands
through the ``detcore_add_cli_commands`` hook (detcore-engine adds train, eval, predict, config)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from detcore.plugins.manager import get_plugin_manager

__all__ = ["build_parser", "main"]


def _plugins_command(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    entries = manager.registry.entries(args.kind)
    clashes = manager.registry.clashes()
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "distribution": e.provider.distribution,
            "version": e.provider.version,
            "plugin": e.provider.plugin,
            "target": e.target if isinstance(e.target, str) else f"{e.target.__module__}:{e.target.__qualname__}",
            "replaces": [str(p) for p in e.replaced],
        }
        for e in entries
    ]
    problems = [str(e) for e in manager.errors] + [str(c) for c in clashes]
    if args.json:
        json.dump(
            {
                "components": rows,
                "plugins": [vars(p) for p in manager.plugins],
                "kinds": manager.registry.declared_kinds(),
                "errors": problems,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        header = ("KIND", "NAME", "DISTRIBUTION", "VERSION")
        table = [header] + [(r["kind"], r["name"], r["distribution"], r["version"]) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
    return 1 if problems and args.strict else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detcore", description="detcore: object detection and segmentation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="list installed components: kind, name, distribution, version")
    plugins.add_argument("--json", action="store_true", help="print JSON for machines")
    plugins.add_argument("--kind", default=None, help="only this component kind")
    plugins.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load or clashes")
    plugins.set_defaults(func=_plugins_command)
    get_plugin_manager().pm.hook.detcore_add_cli_commands(subparsers=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
