"""Resources: pydantic settings injected into steps by parameter name (API.md §5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from rivers.exceptions import ConfigurationError


class Resource(BaseSettings):
    """A shared dependency; override `setup()` / `teardown()` for a lifecycle."""

    model_config = SettingsConfigDict(arbitrary_types_allowed=True)

    def setup(self) -> None:
        """Called once per process before the first step that uses this resource."""

    def teardown(self) -> None:
        """Called when the repository shuts down or the worker process stops."""


def coerce_resource(key: str, value: Any) -> BaseModel:
    """A resource value as a model instance; classes are instantiated with their defaults."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value()
    if isinstance(value, BaseModel):
        return value
    raise ConfigurationError(
        f"Resource '{key}' must be an instance of a pydantic model (rs.Resource, BaseSettings or BaseModel) "
        f"or a model class, got {type(value).__name__}"
    )


def setup_resource(value: BaseModel) -> None:
    setup = getattr(value, "setup", None)
    if callable(setup):
        setup()


def teardown_resource(value: BaseModel) -> None:
    teardown = getattr(value, "teardown", None)
    if callable(teardown):
        teardown()
