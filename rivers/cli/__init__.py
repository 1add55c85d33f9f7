"""Command-line entry points: `rivers`, `rivers-coordinator`, `rivers-worker` (API.md §10)."""

from __future__ import annotations


class UsageError(Exception):
    """The command could not start; its message is shown as one line and the exit code is 2."""
