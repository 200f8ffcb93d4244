from __future__ import annotations

from pathlib import Path

import pytest


def _find_shared() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent.parent / "shared"
        if (candidate / "reference").is_dir():
            return candidate
        candidate = parent / "shared"
        if (candidate / "reference").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    shared = _find_shared()
    if shared is None:
        pytest.skip("shared/reference (detectron2 golden data) not found next to the repository")
    return shared / "reference"
