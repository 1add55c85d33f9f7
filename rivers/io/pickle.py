"""PickleIOHandler: each value pickled to `<prefix>/<asset>.pkl` in an obstore store."""

from __future__ import annotations

import pickle
import time
from typing import Any

import obstore
from obstore.store import MemoryStore
from pydantic import field_serializer, field_validator

from rivers.io.base import BaseIOHandler, InputContext, OutputContext
from rivers.io.stores import store_from_json, store_to_json


class PickleIOHandler(BaseIOHandler):
    """Writes the bare value with `pickle`; any pickle file at that path loads too."""

    store: Any
    prefix: str = ""

    def __init__(self, store: Any = None, prefix: str = "", **kwargs: Any) -> None:
        if store is None:
            store = kwargs.pop("store", None)
        super().__init__(store=store, prefix=prefix, **kwargs)  # type: ignore[call-arg]  # pydantic fields

    @field_validator("store", mode="before")
    @classmethod
    def _rebuild_store(cls, value: Any) -> Any:
        return store_from_json(value) if isinstance(value, dict) else value

    @field_serializer("store")
    def _describe_store(self, store: Any) -> dict[str, Any]:
        return store_to_json(store)

    def is_process_local(self) -> bool:
        return isinstance(self.store, MemoryStore)

    def path_for(self, asset_name: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{asset_name}.pkl" if prefix else f"{asset_name}.pkl"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self.path_for(context.asset_name)
        start = time.perf_counter()
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        obstore.put(self.store, path, data)
        context.add_output_metadata(
            {
                "path": path,
                "serializer": "pickle",
                "size_bytes": len(data),
                "write_duration_s": time.perf_counter() - start,
            }
        )

    def load_input(self, context: InputContext) -> Any:
        path = self.path_for(context.asset_name)
        try:
            data = obstore.get(self.store, path).bytes()
        except FileNotFoundError as exc:  # obstore's message is a multi-line debug dump: say it in one line
            reader = f"'{context.downstream_asset}' cannot load its input" if context.downstream_asset else \
                "cannot load"
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FileNotFoundError(f"{reader} '{context.asset_name}' (was it materialized?): {detail}") from exc
        return pickle.loads(bytes(data))
