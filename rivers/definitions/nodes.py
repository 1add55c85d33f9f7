"""What every node definition (asset, multi-asset, task, ...) has in common."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rivers.definitions.policies import Hook, RetryPolicy
from rivers.io.base import BaseIOHandler

RESERVED_KWARGS = ("partitions_def", "automation_condition", "backfill_strategy", "pool", "pool_slots")


def reject_reserved(kind: str, reserved: dict[str, Any]) -> None:
    """Reserved keywords are accepted but not implemented yet (API.md preamble)."""
    for key, value in reserved.items():
        if key not in RESERVED_KWARGS:
            raise TypeError(f"{kind}() got an unexpected keyword argument '{key}'")
        if value is not None:
            raise NotImplementedError(f"{kind}({key}=...) is not supported by this version of rivers")


def check_tags(owner: str, tags: list[str] | None) -> list[str] | None:
    """A copy of `tags` (None stays None); anything but a list of strings is a TypeError naming `owner`."""
    if tags is None:
        return None
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise TypeError(f"tags of '{owner}' must be a list of strings, got {tags!r}")
    return list(tags)


class NodeDefinition:
    """Base of every definition that becomes a step: a function plus how to run and store it."""

    kind: str = "node"
    name: str
    fn: Callable[..., Any] | None
    tags: list[str] | None
    io_handler: BaseIOHandler | str | None
    metadata: dict[str, str]
    retry: RetryPolicy | str | None
    hooks: list[Hook] | None

    def _init_node(
        self,
        fn: Callable[..., Any] | None,
        name: str | None,
        tags: list[str] | None,
        io_handler: BaseIOHandler | str | None,
        metadata: dict[str, str] | None,
        retry: RetryPolicy | str | None,
        hooks: list[Hook] | None,
    ) -> None:
        if fn is not None and not callable(fn):
            raise TypeError(f"{type(self).__name__} needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = node_name = name or (fn.__name__ if fn is not None else "")
        self.tags = check_tags(node_name, tags)
        self.io_handler = io_handler
        self.metadata = dict(metadata or {})
        self.retry = retry
        self.hooks = list(hooks) if hooks is not None else None  # None when not given, as rivers 0.6
        self.__doc__ = getattr(fn, "__doc__", None)
        if fn is not None:
            self.__module__ = fn.__module__
            self.__qualname__ = fn.__qualname__
            self.__wrapped__ = fn

    @property
    def is_async(self) -> bool:
        fn = self.fn
        return fn is not None and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))

    @property
    def output_names(self) -> list[str]:
        return [self.name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
