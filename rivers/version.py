"""The version of this rivers, as installed (for messages between processes of different versions)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    RIVERS_VERSION = version("rivers")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    RIVERS_VERSION = "unknown"
