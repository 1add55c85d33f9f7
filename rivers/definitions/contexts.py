"""The contexts a step function receives as its first parameter (API.md §5).

Both are also constructible by hand, to call an asset or task function directly in a unit test:
`AssetExecutionContext("orders")`, `TaskExecutionContext("clean")`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from rivers.definitions.metadata import coerce_metadata
from rivers.definitions.unsupported import refuse_if_used
from rivers.exceptions import ExecutionError

ConfigT = TypeVar("ConfigT", bound=BaseModel)

ASSET_LOGGER_PREFIX = "code-repo.assets"  # rivers 0.6 names a step's logger after the code location
TASK_LOGGER_PREFIX = "code-repo.tasks"


def _config_or_none(config: Any) -> Any:
    """The step's config; an empty one (no config model, nothing set) is None, as in rivers 0.6."""
    return None if config is None or (isinstance(config, dict) and not config) else config


class _PartitionFree:
    """What contexts say about partitions: there are none."""

    partition: Any = None

    @property
    def has_partition_key(self) -> bool:
        return False

    @property
    def partition_key(self) -> str:
        raise ExecutionError("No partition key available — asset is not partitioned")

    @property
    def partition_time_window(self) -> tuple[dt.datetime, dt.datetime] | None:
        return None


class AssetExecutionContext(_PartitionFree, Generic[ConfigT]):
    """Context of an asset step; `AssetExecutionContext[MyConfig]` types `config`.

    `output_selection` lists the outputs being materialized of a multi-asset; it is empty for a single asset.
    """

    def __init__(
        self,
        asset_name: str,
        tags: list[str] | None = None,
        kinds: list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        asset_metadata: dict[str, str] | None = None,
        partition: Any = None,
        is_multi_asset: bool = False,
        output_selection: list[str] | None = None,
        config: Any = None,
        run_id: str | None = None,
    ) -> None:
        refuse_if_used("AssetExecutionContext", partition=partition)
        self.asset_name = asset_name
        self.run_id = run_id
        self.tags = list(tags) if tags is not None else None
        self.kinds = list(kinds or [])
        self.group = group
        self.code_version = code_version
        self.asset_metadata = dict(asset_metadata) if asset_metadata is not None else None
        self.is_multi_asset = is_multi_asset
        self.output_selection = list(output_selection or []) if is_multi_asset else []
        self.config: ConfigT = _config_or_none(config)
        self.output_metadata: dict[str, Any] = {}
        self.data_version: str | None = None
        self.log = logging.getLogger(f"{ASSET_LOGGER_PREFIX}.{asset_name}")

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        self.output_metadata.update(coerce_metadata(metadata))  # MetadataValues, as in rivers

    def register_data_version(self, version: str) -> None:
        self.data_version = version

    def drain_data_version(self) -> str | None:
        """The registered data version, forgotten once read."""
        version, self.data_version = self.data_version, None
        return version

    def __repr__(self) -> str:
        return f"AssetExecutionContext(asset_name={self.asset_name!r})"


class TaskExecutionContext(_PartitionFree, Generic[ConfigT]):
    """Context of a task step; `TaskExecutionContext[MyConfig]` types `config`."""

    def __init__(
        self,
        task_name: str,
        tags: list[str] | None = None,
        partition: Any = None,
        *,
        run_id: str | None = None,
        config: Any = None,
    ) -> None:
        refuse_if_used("TaskExecutionContext", partition=partition)
        self.task_name = task_name
        self.run_id = run_id
        self.tags = list(tags) if tags is not None else None
        self.config: ConfigT = _config_or_none(config)
        self.output_metadata: dict[str, Any] = {}
        self.data_version: str | None = None
        self.log = logging.getLogger(f"{TASK_LOGGER_PREFIX}.{task_name}")

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        self.output_metadata.update(coerce_metadata(metadata))  # MetadataValues, as in rivers

    def register_data_version(self, version: str) -> None:
        self.data_version = version

    def __repr__(self) -> str:
        return f"TaskExecutionContext(task_name={self.task_name!r})"


CONTEXT_TYPES = (AssetExecutionContext, TaskExecutionContext)
