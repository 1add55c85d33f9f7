"""The IO handler contract: BaseIOHandler and the contexts it receives (API.md §6)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, SettingsConfigDict

from rivers.definitions.metadata import MetadataValue, merge_metadata


class OutputContext:
    """What a handler knows when it writes one output.

    Built by the step runtime; `OutputContext(asset_name)` alone is enough in a unit test. `asset_metadata`
    is the declared metadata (`None` when there is none); `output_metadata` holds `MetadataValue`s (what the
    step added, then what the handler adds) and is `None` while empty.
    """

    __slots__ = ("asset_metadata", "asset_name", "data_version", "output_metadata", "partition", "run_id",
                 "type_hint")

    def __init__(
        self,
        asset_name: str,
        asset_metadata: dict[str, str] | None = None,
        partition: Any = None,
        type_hint: Any = None,
        *,
        output_metadata: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.asset_name = asset_name
        self.asset_metadata = dict(asset_metadata) if asset_metadata else None
        self.partition = partition  # partitions are not supported; always None at run time
        self.type_hint = type_hint
        self.output_metadata: dict[str, MetadataValue] | None = merge_metadata(None, output_metadata)
        self.data_version: str | None = None
        self.run_id = run_id

    def add_output_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Add entries (plain values are coerced to `MetadataValue`s; a key already there is replaced)."""
        self.output_metadata = merge_metadata(self.output_metadata, metadata)

    def register_data_version(self, version: str) -> None:
        self.data_version = version

    def drain_data_version(self) -> str | None:
        """The registered data version, cleared (rivers' one-shot read)."""
        version, self.data_version = self.data_version, None
        return version

    def __repr__(self) -> str:
        return f"OutputContext(asset_name={self.asset_name!r})"


class InputContext:
    """What a handler knows when it loads one input (`asset_metadata` is `None` when none was declared)."""

    __slots__ = ("asset_metadata", "asset_name", "downstream_asset", "partition", "type_hint")

    def __init__(
        self,
        asset_name: str,
        downstream_asset: str | None = None,
        asset_metadata: dict[str, str] | None = None,
        partition: Any = None,
        type_hint: Any = None,
    ) -> None:
        self.asset_name = asset_name
        self.downstream_asset = downstream_asset
        self.asset_metadata = dict(asset_metadata) if asset_metadata else None
        self.partition = partition  # partitions are not supported; always None at run time
        self.type_hint = type_hint

    def __repr__(self) -> str:
        return f"InputContext(asset_name={self.asset_name!r}, downstream_asset={self.downstream_asset!r})"


class BaseIOHandler(BaseSettings, abc.ABC):
    """Writes a node's value and loads it for its downstream steps.

    Subclasses are pydantic settings: their fields are their configuration, which is how a
    handler travels to a worker process (`model_dump_json` -> `model_validate_json`).
    """

    model_config = SettingsConfigDict(arbitrary_types_allowed=True, extra="forbid")

    #: True when values live in this process only (they cannot be read by another process).
    process_local: ClassVar[bool] = False

    def is_process_local(self) -> bool:
        return self.process_local

    @abc.abstractmethod
    def handle_output(self, context: OutputContext, obj: Any) -> None: ...

    @abc.abstractmethod
    def load_input(self, context: InputContext) -> Any: ...

