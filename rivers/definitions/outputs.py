"""What a step function may return: Output, Materialization, DynamicOutput (and MetadataValue)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rivers.definitions.metadata import MetadataValue, coerce_metadata

__all__ = ["DynamicOutput", "Materialization", "MetadataValue", "Output", "coerce_metadata"]


def _check_str(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"'{type(value).__name__}' object is not an instance of 'str' ({what})")


def _check_metadata(metadata: Any) -> None:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"'{type(metadata).__name__}' object is not an instance of 'dict' (metadata)")


def _tags(tags: Any) -> dict[str, str] | list[str] | None:
    if tags is None or isinstance(tags, dict):
        return tags
    return list(tags)


def _repr(kind: str, output_name: str | None, flags: str, data_version: str | None) -> str:
    """rivers' repr: the name and data version only when set, quoted without escaping."""
    name = f"output_name='{output_name}', " if output_name is not None else ""
    version = f", data_version='{data_version}'" if data_version is not None else ""
    return f"{kind}({name}{flags}{version})"


class Output:
    """A returned or yielded value with its output name, metadata, data version and tags.

    `metadata` is kept as given; its values become `MetadataValue`s when the step writes the output.
    """

    __slots__ = ("data_version", "metadata", "output_name", "tags", "value")

    def __init__(
        self,
        value: Any = None,
        *,
        output_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        data_version: str | None = None,
        tags: dict[str, str] | list[str] | None = None,
    ) -> None:
        _check_str(output_name, "output_name")
        _check_str(data_version, "data_version")
        _check_metadata(metadata)
        self.value = value
        self.output_name = output_name
        self.metadata = metadata
        self.data_version = data_version
        self.tags = _tags(tags)

    def __repr__(self) -> str:
        has_value = "true" if self.value is not None else "false"
        has_metadata = "true" if self.metadata else "false"
        return _repr("Output", self.output_name, f"has_value={has_value}, has_metadata={has_metadata}",
                     self.data_version)


class Materialization:
    """The asset persisted itself: record metadata and data version, call no IO handler."""

    __slots__ = ("data_version", "metadata", "output_name", "tags")

    def __init__(
        self,
        *,
        output_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        data_version: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        _check_str(output_name, "output_name")
        _check_str(data_version, "data_version")
        _check_metadata(metadata)
        self.output_name = output_name
        self.metadata = metadata
        self.data_version = data_version
        self.tags = _tags(tags)

    def __repr__(self) -> str:
        has_metadata = "true" if self.metadata else "false"
        return _repr("Materialization", self.output_name, f"has_metadata={has_metadata}", self.data_version)


class DynamicOutput:
    """One item of a fan-out source with its own instance key."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"'{type(key).__name__}' object is not an instance of 'str' (DynamicOutput key)")
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        return f"DynamicOutput(key='{self.key}')"
