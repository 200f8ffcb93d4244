"""Shared setup of detcore-ops' tests.

The ``compat`` nox session runs these tests against one built wheel under torch versions for which no
CPU torchvision exists (torch 2.13.0 CPU). It sets ``DETCORE_COMPAT_NO_TORCHVISION=1``; then any test that
touches ``torchvision`` is skipped with that reason and every other test runs. Anywhere else a missing
torchvision stays an ImportError.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import types

import pytest


class _NoTorchvision(types.ModuleType):
    """Stands in for torchvision and its submodules: using any attribute skips the calling test."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        pytest.skip("torchvision has no build for this torch version (compat session)")


class _NoTorchvisionFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers every ``import torchvision[.x]`` with a :class:`_NoTorchvision` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _NoTorchvision(spec.name)

    def exec_module(self, module):
        module.__path__ = []


if os.environ.get("DETCORE_COMPAT_NO_TORCHVISION") == "1" and importlib.util.find_spec("torchvision") is None:
    sys.meta_path.insert(0, _NoTorchvisionFinder())
