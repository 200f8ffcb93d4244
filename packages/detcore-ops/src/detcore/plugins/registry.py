"""The component registry: (kind, name) -> class, factory or lazy "module:attr" target."""

from __future__ import annotations

import difflib
import importlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detcore.plugins.errors import DuplicateComponentError, UnknownComponentError, UnknownKindError

__all__ = ["ComponentEntry", "ComponentRegistry", "Provider"]

logger = logging.getLogger("detcore.plugins")


@dataclass(frozen=True)
class Provider:
    """Who registered a component: plugin (entry-point name), distribution and its version."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


DIRECT = Provider(plugin="<direct>", distribution="<direct>", version="")


@dataclass
class ComponentEntry:
    """One resolved component. ``target`` may still be a lazy "module:attr" string; ``load()`` imports it."""

    kind: str
    name: str
    target: Any
    provider: Provider
    replaced: list[Provider] = field(default_factory=list)

    def load(self) -> Any:
        if isinstance(self.target, str):
            self.target = _import_target(self.target, self)
        return self.target


def _import_target(spec: str, entry: ComponentEntry) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ImportError(
            f"cannot load {entry.kind} {entry.name!r} from {spec!r} (registered by {entry.provider}): {exc}"
        ) from exc
    return obj


@dataclass
class _Claim:
    target: Any
    provider: Provider
    replace: bool


def _check_target(kind: str, name: str, target: Any) -> None:
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(
                f"target of {kind} {name!r} must be a class, a factory or a 'module:attr' string, got {target!r}"
            )
    elif not callable(target):
        raise TypeError(
            f"target of {kind} {name!r} must be a class, a factory or a 'module:attr' string, "
            f"got {type(target).__name__}"
        )


class ComponentRegistry:
    """Components by (kind, name).

    Plugins fill it through the ``detcore_register_components(registry)`` hook, where ``registry`` is
    bound to the calling plugin so each component records its providing distribution. A (kind, name)
    claimed by two providers is a clash (:class:`DuplicateComponentError` on lookup) unless exactly one of
    them passed ``replace=True``, which then wins and is logged.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, Provider]] = {}
        self._claims: dict[tuple[str, str], list[_Claim]] = defaultdict(list)
        self._resolved: dict[tuple[str, str], ComponentEntry] = {}
        self._provider = DIRECT

    # -- registration ---------------------------------------------------------------------------
    def bound(self, provider: Provider) -> ComponentRegistry:
        """A view of this registry whose add()/declare_kind() record ``provider``."""
        view = object.__new__(ComponentRegistry)
        view.__dict__.update(self.__dict__)
        view._provider = provider
        return view

    def declare_kind(self, kind: str, description: str = "") -> None:
        """Declare a component kind (done by the package that owns the kind)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        self._kinds.setdefault(kind, (description, self._provider))

    def add(self, kind: str, name: str, target: Callable[..., Any] | str, *, replace: bool = False) -> None:
        """Register ``target`` as component ``name`` of ``kind``.

        Args:
            kind: component kind, e.g. "backbone".
            name: the name configs use, e.g. "resnet_fpn".
            target: a class or factory, or a lazy "module:attr" string imported on first use.
            replace: replace an existing component of that name on purpose (logged).
        """
        for label, value in (("kind", kind), ("name", name)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{label} must be a non-empty string, got {value!r}")
        _check_target(kind, name, target)
        self._claims[(kind, name)].append(_Claim(target, self._provider, replace))
        self._resolved.pop((kind, name), None)

    # -- lookup ---------------------------------------------------------------------------------
    def declared_kinds(self) -> dict[str, str]:
        """Declared kinds -> description."""
        return {k: d for k, (d, _) in sorted(self._kinds.items())}

    def kinds(self) -> list[str]:
        """Declared kinds plus any kind that has components."""
        return sorted(set(self._kinds) | {k for k, _ in self._claims})

    def resolve(self, kind: str, name: str) -> ComponentEntry:
        """The entry for (kind, name), target not yet imported."""
        key = (kind, name)
        if key in self._resolved:
            return self._resolved[key]
        claims = self._claims.get(key)
        if not claims:
            if kind not in self._kinds and not any(k == kind for k, _ in self._claims):
                raise UnknownKindError(kind, self.kinds())
            available = {e.name: str(e.provider) for e in self._entries_of(kind)}
            close = difflib.get_close_matches(name, list(available), n=1)
            raise UnknownComponentError(kind, name, available, close[0] if close else None)
        if len(claims) == 1:
            entry = ComponentEntry(kind, name, claims[0].target, claims[0].provider)
        else:
            replacers = [c for c in claims if c.replace]
            if len(replacers) != 1:
                clashing = replacers if len(replacers) > 1 else claims
                raise DuplicateComponentError(kind, name, [str(c.provider) for c in clashing])
            winner = replacers[0]
            others = [c.provider for c in claims if c is not winner]
            logger.info(
                "%s %r from %s replaces the one from %s", kind, name, winner.provider, ", ".join(map(str, others))
            )
            entry = ComponentEntry(kind, name, winner.target, winner.provider, others)
        self._resolved[key] = entry
        return entry

    def get(self, kind: str, name: str) -> Any:
        """The component's class or factory (lazy targets are imported now)."""
        return self.resolve(kind, name).load()

    def names(self, kind: str) -> list[str]:
        """Names registered for ``kind`` (clashing names included)."""
        return sorted(n for k, n in self._claims if k == kind)

    def _entries_of(self, kind: str | None) -> list[ComponentEntry]:
        out = []
        for k, n in sorted(self._claims):
            if kind is not None and k != kind:
                continue
            try:
                out.append(self.resolve(k, n))
            except DuplicateComponentError:
                continue
        return out

    def entries(self, kind: str | None = None) -> list[ComponentEntry]:
        """Resolved entries (clashes left out: see :meth:`clashes`), sorted by kind and name."""
        return self._entries_of(kind)

    def clashes(self) -> list[DuplicateComponentError]:
        """One error per (kind, name) claimed by several providers without a single replace=True."""
        out = []
        for k, n in sorted(self._claims):
            try:
                self.resolve(k, n)
            except DuplicateComponentError as exc:
                out.append(exc)
        return out
