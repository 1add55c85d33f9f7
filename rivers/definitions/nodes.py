"""What every node definition (asset, multi-asset, task, ...) has in common."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rivers.definitions.policies import Hook, RetryPolicy
from rivers.definitions.unsupported import refuse_if_used
from rivers.io.base import BaseIOHandler

RESERVED_KWARGS = ("partitions_def", "automation_condition", "backfill_strategy", "pool", "pool_slots")
# reserved keywords a kind takes beyond RESERVED_KWARGS, as rivers 0.6.2 has them
EXTRA_RESERVED: dict[str, tuple[str, ...]] = {"AssetDef": ("partition_mapping",), "Task": ("partition_mapping",)}


def reject_reserved(kind: str, reserved: dict[str, Any]) -> None:
    """Reserved keywords are accepted, and refused only when used (API.md preamble; see unsupported.py)."""
    accepted = RESERVED_KWARGS + EXTRA_RESERVED.get(kind, ())
    for key in reserved:
        if key not in accepted:
            raise TypeError(f"{kind}() got an unexpected keyword argument '{key}'")
    refuse_if_used(kind, **reserved)


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
