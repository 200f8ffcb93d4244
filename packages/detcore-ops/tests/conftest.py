"""Shared setup of detcore-ops' tests.

The ``compat`` nox session runs these tests against one built wheel under torch versions for which no
CPU torchvision exists (torch 2.13.0 CPU). It sets ``DETCORE_COMPAT_NO_TORCHVISION=1``; then any test that
touches ``torchvision`` is skipped with that reason and every other test runs. Anywhere else a missing
torchvision stays an ImportError.
"""

from __future__ import annotations

import os
import sys
import types

import pytest

if os.environ.get("DETCORE_COMPAT_NO_TORCHVISION") == "1":
    try:
        import torchvision  # noqa: F401
    except ImportError:

        class _NoTorchvision(types.ModuleType):
            def __getattr__(self, name: str):
                if name.startswith("__"):
                    raise AttributeError(name)
                pytest.skip("torchvision has no build for this torch version (compat session)")

        sys.modules["torchvision"] = _NoTorchvision("torchvision")
