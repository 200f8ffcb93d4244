"""Real installs (pip --target) of plugins that clash, and of a plugin whose import raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _make_dist(root: Path, dist: str, version: str, module: str, body: str) -> Path:
    src = root / dist
    (src / "src" / module).mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "{dist}"
            version = "{version}"
            [project.entry-points.detcore]
            {module} = "{module}.plugin"
            [tool.hatch.build.targets.wheel]
            packages = ["src/{module}"]
            """
        )
    )
    (src / "src" / module / "__init__.py").write_text("")
    (src / "src" / module / "plugin.py").write_text(textwrap.dedent(body))
    return src


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    register = """
        from detcore.plugins import hookimpl

        @hookimpl
        def detcore_register_components(registry):
            registry.add("backbone", "shared_name", "collections:OrderedDict")
            registry.add("backbone", "{own}", "collections:Counter")
        """
    dists = [
        _make_dist(root, "clash-a", "1.0", "clash_a", register.format(own="only_a")),
        _make_dist(root, "clash-b", "2.0", "clash_b", register.format(own="only_b")),
        _make_dist(root, "broken-plugin", "0.3", "broken_plugin", 'raise RuntimeError("boom at import")\n'),
    ]
    target = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
        ]
        + [str(d) for d in dists],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def _env(site: Path) -> dict[str, str]:
    """The test environment plus the --target directory, first on sys.path."""
    paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _python(site: Path, code: str) -> subprocess.CompletedProcess:
    env = _env(site)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


def test_clash_between_two_installed_plugins_names_both(site):
    result = _python(
        site,
        """
        from detcore.plugins import get_component, DuplicateComponentError
        try:
            get_component("backbone", "shared_name")
        except DuplicateComponentError as e:
            print(e)
        # the other names of both plugins still work
        print(get_component("backbone", "only_a").__name__, get_component("backbone", "only_b").__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith("backbone 'shared_name' is registered by both clash-a 1.0 and clash-b 2.0")
    assert second == "Counter Counter"
    listing = subprocess.run(
        [sys.executable, "-m", "detcore.plugins", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=_env(site),
        timeout=300,
    )
    data = json.loads(listing.stdout)
    assert any("clash-a 1.0 and clash-b 2.0" in e for e in data["errors"])
    strict = subprocess.run(
        [sys.executable, "-m", "detcore.plugins", "plugins", "--strict"],
        capture_output=True,
        text=True,
        env=_env(site),
        timeout=300,
    )
    assert strict.returncode == 1 and "shared_name" in strict.stderr


def test_plugin_whose_import_raises_is_reported_and_others_load(site):
    result = _python(
        site,
        """
        import traceback
        from detcore.plugins import get_component, get_plugin_manager, UnknownComponentError
        assert get_component("backbone", "only_a").__name__ == "Counter"   # others still load
        from detcore.ops._dispatch import CPU_KERNELS
        assert get_component("kernels", "cpu")() is CPU_KERNELS
        [err] = [e for e in get_plugin_manager().errors if e.distribution == "broken-plugin"]
        print(err)
        print(type(err.__cause__).__name__, err.__cause__)
        print("".join(traceback.format_exception(err)).count("boom at import") >= 2)
        try:
            get_component("backbone", "not_there")
        except UnknownComponentError as miss:
            print(type(miss.__cause__).__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        "failed to load detcore plugin 'broken_plugin' from broken-plugin 0.3: import failed: "
        "RuntimeError: boom at import"
    )
    assert lines[1] == "RuntimeError boom at import"
    assert lines[2] == "True"  # the chained traceback reaches the original raise
    assert lines[3] == "PluginLoadError"
    assert "failed to load detcore plugin 'broken_plugin'" in result.stderr  # also logged as a warning
