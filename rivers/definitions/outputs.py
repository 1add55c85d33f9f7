"""What a step function may return: Output, Materialization, MetadataValue."""

from __future__ import annotations

import builtins
import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetadataValue:
    """A typed metadata value; `raw_value()` gives the plain Python value."""

    kind: str
    value: Any

    @staticmethod
    def int(value: int) -> MetadataValue:
        return MetadataValue("int", int(value))

    @staticmethod
    def float(value: float) -> MetadataValue:
        return MetadataValue("float", float(value))

    @staticmethod
    def text(value: str) -> MetadataValue:
        return MetadataValue("text", str(value))

    @staticmethod
    def json(value: Any) -> MetadataValue:
        return MetadataValue("json", value)

    @staticmethod
    def bool(value: builtins.bool) -> MetadataValue:
        return MetadataValue("bool", bool(value))

    @staticmethod
    def timestamp(value: builtins.float | dt.datetime) -> MetadataValue:
        if isinstance(value, dt.datetime):
            value = value.timestamp()
        return MetadataValue("timestamp", float(value))

    def raw_value(self) -> Any:
        return self.value


def raw_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata with every MetadataValue replaced by its raw value (JSON-friendly)."""
    return {k: v.raw_value() if isinstance(v, MetadataValue) else v for k, v in metadata.items()}


@dataclass
class Output:
    """A returned or yielded value with its output name, metadata and data version."""

    value: Any
    output_name: str | None = None
    metadata: dict[str, Any] | None = None
    data_version: str | None = None
    tags: dict[str, str] | list[str] | None = None

    def __init__(
        self,
        value: Any,
        *,
        output_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        data_version: str | None = None,
        tags: dict[str, str] | list[str] | None = None,
    ) -> None:
        self.value = value
        self.output_name = output_name
        self.metadata = metadata
        self.data_version = data_version
        self.tags = tags


@dataclass
class Materialization:
    """The asset persisted itself: record metadata, call no IO handler."""

    metadata: dict[str, Any] | None = field(default=None)
    data_version: str | None = None

    def __init__(self, *, metadata: dict[str, Any] | None = None, data_version: str | None = None) -> None:
        self.metadata = metadata
        self.data_version = data_version


@dataclass(frozen=True)
class DynamicOutput:
    """One item of a fan-out source with its own instance key."""

    key: str
    value: Any
