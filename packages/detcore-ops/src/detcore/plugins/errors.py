"""Errors of the plugin system; each names the culprit (plugin, distribution, kind, name)."""

from __future__ import annotations

__all__ = [
    "DuplicateComponentError",
    "PluginError",
    "PluginLoadError",
    "UnknownComponentError",
    "UnknownKindError",
]


class PluginError(Exception):
    """Base class of detcore plugin errors."""


class PluginLoadError(PluginError):
    """A plugin failed to import or to register its components (chained to the original error)."""

    def __init__(self, plugin: str, distribution: str, version: str, reason: str):
        self.plugin = plugin
        self.distribution = distribution
        self.version = version
        super().__init__(
            f"failed to load detcore plugin {plugin!r} from {distribution} {version}: {reason}"
        )


class DuplicateComponentError(PluginError, ValueError):
    """Two distributions (or two plugins) registered the same (kind, name) without replace=True."""

    def __init__(self, kind: str, name: str, providers: list[str]):
        self.kind = kind
        self.name = name
        self.providers = providers
        joined = " and ".join(providers)
        super().__init__(
            f"{kind} {name!r} is registered by both {joined}; uninstall one of them, or have one "
            f"register it with registry.add(..., replace=True) to replace the other on purpose"
        )


class UnknownComponentError(PluginError, KeyError):
    """No component of that kind has that name."""

    def __init__(self, kind: str, name: str, available: dict[str, str], suggestion: str | None = None):
        self.kind = kind
        self.name = name
        self.available = available
        listing = ", ".join(f"{n} ({d})" for n, d in sorted(available.items())) or "none"
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        self.message = f"unknown {kind} {name!r}; available {kind} names: {listing}.{hint}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class UnknownKindError(PluginError, KeyError):
    """No installed package declares that component kind."""

    def __init__(self, kind: str, declared: list[str]):
        self.kind = kind
        self.message = (
            f"unknown component kind {kind!r}; declared kinds: {', '.join(sorted(declared)) or 'none'} "
            f"(a kind is declared by the package that owns it: is that package installed?)"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message
