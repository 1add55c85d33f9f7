"""The contexts a step function receives as its first parameter (API.md §5)."""

from __future__ import annotations

import logging
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class AssetExecutionContext(Generic[ConfigT]):
    """Context of an asset step; `AssetExecutionContext[MyConfig]` types `config`."""

    def __init__(
        self,
        *,
        asset_name: str,
        run_id: str = "",
        tags: list[str] | None = None,
        kinds: list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        asset_metadata: dict[str, str] | None = None,
        is_multi_asset: bool = False,
        output_selection: list[str] | None = None,
        config: Any = None,
    ) -> None:
        self.asset_name = asset_name
        self.run_id = run_id
        self.tags = list(tags or [])
        self.kinds = list(kinds or [])
        self.group = group
        self.code_version = code_version
        self.asset_metadata = dict(asset_metadata or {})
        self.is_multi_asset = is_multi_asset
        self.output_selection = list(output_selection or [asset_name])
        self.config: ConfigT = config
        self.output_metadata: dict[str, Any] = {}
        self.data_version: str | None = None
        self.log = logging.getLogger(f"rivers.assets.{asset_name}")

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        self.output_metadata.update(metadata)

    def register_data_version(self, version: str) -> None:
        self.data_version = version

    def __repr__(self) -> str:
        return f"AssetExecutionContext(asset_name={self.asset_name!r})"


class TaskExecutionContext(Generic[ConfigT]):
    """Context of a task step; `TaskExecutionContext[MyConfig]` types `config`."""

    def __init__(self, *, task_name: str, run_id: str = "", tags: list[str] | None = None, config: Any = None) -> None:
        self.task_name = task_name
        self.run_id = run_id
        self.tags = list(tags or [])
        self.config: ConfigT = config
        self.output_metadata: dict[str, Any] = {}
        self.data_version: str | None = None
        self.log = logging.getLogger(f"rivers.tasks.{task_name}")

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        self.output_metadata.update(metadata)

    def register_data_version(self, version: str) -> None:
        self.data_version = version

    def __repr__(self) -> str:
        return f"TaskExecutionContext(task_name={self.task_name!r})"


CONTEXT_TYPES = (AssetExecutionContext, TaskExecutionContext)
