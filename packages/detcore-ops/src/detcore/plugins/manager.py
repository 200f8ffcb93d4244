"""Lazy plugin loading: entry points of group ``detcore`` -> pluggy PluginManager -> ComponentRegistry."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

import pluggy

from detcore.plugins import hookspecs
from detcore.plugins.errors import PluginLoadError, UnknownComponentError
from detcore.plugins.registry import ComponentRegistry, Provider

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "PluginManager", "get_plugin_manager", "reset_plugin_manager"]

ENTRY_POINT_GROUP = "detcore"
logger = logging.getLogger("detcore.plugins")


@dataclass(frozen=True)
class PluginInfo:
    """One plugin module found through the ``detcore`` entry-point group."""

    name: str
    distribution: str
    version: str
    module: str

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)


def _env_list(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def discover(path: list[str] | None = None) -> list[tuple[PluginInfo, md.EntryPoint]]:
    """Entry points of group ``detcore`` in installed distributions (first occurrence on sys.path wins)."""
    seen: set[str] = set()
    found = []
    for dist in md.distributions(**({"path": path} if path is not None else {})):
        dist_name = dist.metadata["Name"] or "<unknown>"
        key = dist_name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.append((PluginInfo(ep.name, dist_name, dist.version or "", ep.value), ep))
    return sorted(found, key=lambda item: (item[0].distribution, item[0].name))


class PluginManager:
    """Loads detcore plugins and fills a :class:`ComponentRegistry`.

    Nothing happens at construction; :meth:`load` (called by the first lookup or listing) imports each
    plugin module, registers it with pluggy and calls its ``detcore_register_components`` hook. A plugin
    that fails to import or to register is recorded as a :class:`PluginLoadError` (logged, and chained as
    the cause of any lookup miss) and every other plugin still loads.

    Environment: ``DETCORE_DISABLE_PLUGIN_AUTOLOAD=1`` loads only detcore's own distributions
    (``detcore-*``); ``DETCORE_DISABLED_PLUGINS=a,b`` blocks plugins by entry-point name;
    ``DETCORE_TRACE_PLUGINS=1`` traces hook calls to the ``detcore.plugins`` logger.
    """

    def __init__(self, plugins: Iterable[tuple[PluginInfo, ModuleType | str]] | None = None) -> None:
        """Args:
        plugins: explicit (info, module or module name) pairs instead of entry-point discovery (tests).
        """
        self._explicit = list(plugins) if plugins is not None else None
        self._lock = threading.RLock()
        self._loaded = False
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = ComponentRegistry()
        self.plugins: list[PluginInfo] = []
        self.errors: list[PluginLoadError] = []
        if os.environ.get("DETCORE_TRACE_PLUGINS") == "1":
            self.pm.trace.root.setwriter(logger.info)
            self.pm.enable_tracing()

    def _fail(self, info: PluginInfo, exc: BaseException, what: str) -> None:
        err = PluginLoadError(info.name, info.distribution, info.version, f"{what}: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        self.errors.append(err)
        logger.warning("%s", err)

    def _candidates(self) -> list[tuple[PluginInfo, object]]:
        if self._explicit is not None:
            return list(self._explicit)
        only_builtin = os.environ.get("DETCORE_DISABLE_PLUGIN_AUTOLOAD") == "1"
        out = []
        for info, ep in discover():
            if only_builtin and not info.distribution.lower().startswith("detcore-"):
                continue
            out.append((info, ep))
        return out

    def load(self) -> PluginManager:
        """Import and register every plugin once; later calls return immediately."""
        with self._lock:
            if self._loaded:
                return self
            self._loaded = True
            blocked = _env_list("DETCORE_DISABLED_PLUGINS")
            for info, source in self._candidates():
                if info.name in blocked:
                    self.pm.set_blocked(info.name)
                    continue
                try:
                    if isinstance(source, md.EntryPoint):
                        module = source.load()
                    elif isinstance(source, str):
                        module = importlib.import_module(source)
                    else:
                        module = source
                except Exception as exc:
                    self._fail(info, exc, "import failed")
                    continue
                plugin_id = f"{info.distribution}:{info.name}"
                try:
                    self.pm.register(module, name=plugin_id)
                except Exception as exc:  # PluginValidationError, or the same module registered twice
                    self._fail(info, exc, "invalid plugin")
                    continue
                self.plugins.append(info)
                others = [p for n, p in self.pm.list_name_plugin() if n != plugin_id]
                caller = self.pm.subset_hook_caller("detcore_register_components", remove_plugins=others)
                try:
                    caller(registry=self.registry.bound(info.provider))
                except Exception as exc:
                    self._fail(info, exc, "detcore_register_components raised")
            return self

    # -- lookups --------------------------------------------------------------------------------
    def get(self, kind: str, name: str):
        """The class or factory registered as ``name`` of ``kind``.

        Raises:
            UnknownComponentError: no such name (lists the available ones; chained to a plugin load
                failure if one happened, since the missing name may live in the broken plugin).
            DuplicateComponentError: two distributions registered the name.
            UnknownKindError: no installed package declares ``kind``.
        """
        self.load()
        try:
            return self.registry.get(kind, name)
        except UnknownComponentError as exc:
            if self.errors:
                failed = "; ".join(str(e) for e in self.errors)
                exc.message += f" (note: some plugins failed to load: {failed})"
                raise exc from self.errors[0]
            raise

    def names(self, kind: str) -> list[str]:
        self.load()
        return self.registry.names(kind)


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, created and loaded on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
    return _manager.load()


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (after installing or removing plugins in this process)."""
    global _manager
    with _manager_lock:
        _manager = None
    importlib.invalidate_caches()
