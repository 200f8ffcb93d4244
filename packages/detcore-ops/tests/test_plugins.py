"""Unit tests of detcore.plugins: registry semantics, lazy manager, error reporting, CLI."""

from __future__ import annotations

import json
import logging
import types

import pytest

from detcore.plugins import (
    ComponentRegistry,
    DuplicateComponentError,
    PluginInfo,
    PluginLoadError,
    PluginManager,
    Provider,
    UnknownComponentError,
    UnknownKindError,
    get_component,
    hookimpl,
    list_components,
)
from detcore.plugins.cli import main as cli_main


class Alpha:
    pass


class Beta:
    pass


A = Provider("a", "dist-a", "1.0")
B = Provider("b", "dist-b", "2.0")


def test_add_and_get_class_and_lazy_string():
    reg = ComponentRegistry()
    reg.declare_kind("backbone", "feature extractors")
    reg.bound(A).add("backbone", "alpha", Alpha)
    reg.bound(A).add("backbone", "ordered", "collections:OrderedDict")
    assert reg.get("backbone", "alpha") is Alpha
    entry = reg.resolve("backbone", "ordered")
    assert entry.target == "collections:OrderedDict"  # not imported before use
    import collections

    assert reg.get("backbone", "ordered") is collections.OrderedDict
    assert reg.names("backbone") == ["alpha", "ordered"]
    assert [e.provider for e in reg.entries("backbone")] == [A, A]


def test_unknown_name_lists_available_with_distributions_and_suggests():
    reg = ComponentRegistry()
    reg.declare_kind("backbone")
    reg.bound(A).add("backbone", "resnet_fpn", Alpha)
    reg.bound(B).add("backbone", "convnext", Beta)
    with pytest.raises(UnknownComponentError) as info:
        reg.get("backbone", "resnet_fnp")
    msg = str(info.value)
    assert "unknown backbone 'resnet_fnp'" in msg
    assert "convnext (dist-b 2.0)" in msg and "resnet_fpn (dist-a 1.0)" in msg
    assert "Did you mean 'resnet_fpn'?" in msg
    assert isinstance(info.value, KeyError)


def test_unknown_kind_lists_declared_kinds():
    reg = ComponentRegistry()
    reg.declare_kind("backbone")
    reg.declare_kind("meta_arch")
    with pytest.raises(
        UnknownKindError, match="unknown component kind 'bacbone'; declared kinds: backbone, meta_arch"
    ):
        reg.get("bacbone", "x")


def test_duplicate_from_two_distributions_names_both():
    reg = ComponentRegistry()
    reg.bound(A).add("roi_heads", "standard", Alpha)
    reg.bound(B).add("roi_heads", "standard", Beta)
    with pytest.raises(DuplicateComponentError) as info:
        reg.get("roi_heads", "standard")
    msg = str(info.value)
    assert "roi_heads 'standard' is registered by both dist-a 1.0 and dist-b 2.0" in msg
    assert [str(c) for c in reg.clashes()] == [msg]
    assert reg.entries("roi_heads") == []  # listings leave clashes out; clashes() reports them


@pytest.mark.parametrize("replacer_first", [True, False])
def test_replace_wins_in_any_order_and_is_logged(caplog, replacer_first):
    reg = ComponentRegistry()
    claims = [(B, Beta, True), (A, Alpha, False)]
    for provider, target, replace in claims if replacer_first else claims[::-1]:
        reg.bound(provider).add("backbone", "resnet", target, replace=replace)
    with caplog.at_level(logging.INFO, logger="detcore.plugins"):
        assert reg.get("backbone", "resnet") is Beta
    assert "backbone 'resnet' from dist-b 2.0 replaces the one from dist-a 1.0" in caplog.text
    assert reg.resolve("backbone", "resnet").replaced == [A]


def test_two_replacers_clash():
    reg = ComponentRegistry()
    reg.bound(A).add("backbone", "resnet", Alpha, replace=True)
    reg.bound(B).add("backbone", "resnet", Beta, replace=True)
    with pytest.raises(DuplicateComponentError, match="dist-a 1.0 and dist-b 2.0"):
        reg.get("backbone", "resnet")


@pytest.mark.parametrize(
    ("kind", "name", "target", "exc", "match"),
    [
        ("", "x", Alpha, ValueError, "kind must be a non-empty string"),
        ("backbone", None, Alpha, ValueError, "name must be a non-empty string"),
        ("backbone", "x", "no_colon_here", ValueError, "'module:attr' string"),
        ("backbone", "x", 42, TypeError, "got int"),
    ],
)
def test_add_rejects_bad_arguments(kind, name, target, exc, match):
    with pytest.raises(exc, match=match):
        ComponentRegistry().add(kind, name, target)


def test_lazy_target_import_failure_names_component_and_provider():
    reg = ComponentRegistry()
    reg.bound(A).add("backbone", "ghost", "detcore_no_such_module:Thing")
    with pytest.raises(
        ImportError,
        match=r"cannot load backbone 'ghost' from 'detcore_no_such_module:Thing' \(registered by dist-a 1.0\)",
    ):
        reg.get("backbone", "ghost")


def _plugin_module(name: str, register) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.detcore_register_components = hookimpl(register)
    return mod


def test_manager_is_lazy_and_isolates_broken_plugins():
    calls = []

    def good(registry):
        calls.append("good")
        registry.declare_kind("backbone")
        registry.add("backbone", "good_net", Alpha)

    def raising_hook(registry):
        raise RuntimeError("hook exploded")

    manager = PluginManager(
        [
            (PluginInfo("good", "dist-good", "1.0", "m"), _plugin_module("good_mod", good)),
            (PluginInfo("missing", "dist-missing", "0.3", "m"), "detcore_definitely_missing_module"),
            (PluginInfo("bad_hook", "dist-bad", "0.1", "m"), _plugin_module("bad_mod", raising_hook)),
        ]
    )
    assert calls == []  # nothing loads at construction
    assert manager.get("backbone", "good_net") is Alpha
    assert calls == ["good"]
    assert [(e.plugin, e.distribution, e.version) for e in manager.errors] == [
        ("missing", "dist-missing", "0.3"),
        ("bad_hook", "dist-bad", "0.1"),
    ]
    import_err, hook_err = manager.errors
    assert "failed to load detcore plugin 'missing' from dist-missing 0.3: import failed" in str(import_err)
    assert isinstance(import_err.__cause__, ModuleNotFoundError)
    assert isinstance(hook_err.__cause__, RuntimeError) and "hook exploded" in str(hook_err)
    # A miss is chained to the load failure, since the name may live in the broken plugin.
    with pytest.raises(UnknownComponentError) as info:
        manager.get("backbone", "other_net")
    assert isinstance(info.value.__cause__, PluginLoadError)
    assert "some plugins failed to load" in str(info.value)


def test_disabled_plugins_env(monkeypatch):
    def reg_a(registry):
        registry.add("backbone", "from_a", Alpha)

    def reg_b(registry):
        registry.add("backbone", "from_b", Beta)

    monkeypatch.setenv("DETCORE_DISABLED_PLUGINS", "b, other")
    manager = PluginManager(
        [
            (PluginInfo("a", "dist-a", "1", "m"), _plugin_module("ma", reg_a)),
            (PluginInfo("b", "dist-b", "1", "m"), _plugin_module("mb", reg_b)),
        ]
    ).load()
    assert manager.registry.names("backbone") == ["from_a"]
    assert [p.name for p in manager.plugins] == ["a"]


def test_invalid_hookimpl_signature_is_reported():
    def wrong(registry, unexpected_argument):
        pass

    manager = PluginManager([(PluginInfo("w", "dist-w", "1", "m"), _plugin_module("mw", wrong))]).load()
    assert len(manager.errors) == 1
    assert "invalid plugin" in str(manager.errors[0])


def test_builtin_cpu_kernels_come_from_the_entry_point():
    from detcore.ops._dispatch import CPU_KERNELS

    assert get_component("kernels", "cpu")() is CPU_KERNELS
    entries = {(e.kind, e.name): e for e in list_components("kernels")}
    assert entries[("kernels", "cpu")].provider.distribution == "detcore-ops"


def test_cli_lists_components_as_json_and_table(capsys):
    assert cli_main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    row = next(c for c in data["components"] if (c["kind"], c["name"]) == ("kernels", "cpu"))
    assert row["distribution"] == "detcore-ops" and row["version"] == "0.1.0.dev0"
    assert row["target"] == "detcore.ops._dispatch:cpu_kernels"
    assert "kernels" in data["kinds"]
    assert cli_main(["plugins", "--kind", "kernels"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION"]
    assert ["kernels", "cpu", "detcore-ops", "0.1.0.dev0"] in [line.split() for line in lines[1:]]
