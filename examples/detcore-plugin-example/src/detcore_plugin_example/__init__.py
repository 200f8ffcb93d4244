"""An example third-party detcore plugin (see README.md)."""

__all__: list[str] = []
