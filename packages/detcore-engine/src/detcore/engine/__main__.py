"""``python -m detcore.engine``: the ``detcore`` command line (same as ``python -m detcore.plugins``)."""

from __future__ import annotations

import sys

from detcore.plugins.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
