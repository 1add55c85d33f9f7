"""Graph assets: a body that wires tasks into a sub-graph at decoration time (API.md §2)."""

from __future__ import annotations

import contextvars
from typing import Any

from rivers.definitions.assets import Asset

_RECORDER: contextvars.ContextVar[Any] = contextvars.ContextVar("rivers_graph_recorder", default=None)


def recording_graph() -> Any:
    """The graph body being recorded in this context, if any."""
    return _RECORDER.get()


class GraphAsset(Asset):
    """A graph of tasks whose final task's value is this asset's value."""

    kind = "graph"

    def __init__(self, fn: Any, /, **kwargs: Any) -> None:
        raise NotImplementedError("Asset.from_graph is not available yet in this version of rivers")
