"""Command-line entry points: `rivers`, `rivers-coordinator`, `rivers-worker` (API.md §10)."""

from __future__ import annotations

DISTRIBUTED_UNAVAILABLE = (
    "distributed mode is not available in this version of rivers: it requires RIVERS_REDIS_URL and a running "
    "rivers-coordinator, which arrive in a later version; use `rivers materialize` to run in this process"
)


class UsageError(Exception):
    """The command could not start; its message is shown as one line and the exit code is 2."""
