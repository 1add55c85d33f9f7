"""Resources: pydantic settings injected into steps by parameter name (API.md §5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from rivers.exceptions import AssetDefinitionError, ConfigurationError
from rivers.io.base import BaseIOHandler

IO_HANDLER_ARGUMENT = "io_handler must be a BaseIOHandler subclass instance or a string resource reference"


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


def check_io_handler_argument(value: Any) -> None:
    """An `io_handler=` argument is a handler instance, a resource key or None (checked at definition)."""
    if value is not None and not isinstance(value, (BaseIOHandler, str)):
        raise AssetDefinitionError(f"{IO_HANDLER_ARGUMENT}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__} (pass an instance: {value.__name__}(...))"
    return type(value).__name__
