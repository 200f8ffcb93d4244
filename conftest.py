"""Fixtures shared by every package's tests (pytest's rootdir is the repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _find_shared() -> Path | None:
    """The ``shared/`` folder with detectron2's reference data: beside the checkout (CI) or inside it."""
    for parent in Path(__file__).resolve().parents:
        for candidate in (parent / "shared", parent.parent / "shared"):
            if (candidate / "reference").is_dir():
                return candidate
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``shared/reference``. Missing data is a failure, not a skip: CI always has it beside the clone."""
    shared = _find_shared()
    if shared is None:
        pytest.fail("shared/reference (detectron2 golden data) not found beside the repository")
    return shared / "reference"
