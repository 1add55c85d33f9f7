"""InMemoryIOHandler: values in a dict of this process (the default handler)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import PrivateAttr

from rivers.io.base import BaseIOHandler, InputContext, OutputContext


class InMemoryIOHandler(BaseIOHandler):
    """Keeps each node's last value in this process; other processes cannot see it."""

    process_local: ClassVar[bool] = True
    _values: dict[str, Any] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        self._values[context.asset_name] = obj

    def load_input(self, context: InputContext) -> Any:
        try:
            return self._values[context.asset_name]
        except KeyError:
            raise KeyError(
                f"'{context.asset_name}' has no value in the in-memory IO handler (was it materialized?)"
            ) from None

    def has_value(self, name: str) -> bool:
        return name in self._values
