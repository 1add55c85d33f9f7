"""obstore stores as JSON, so that a handler holding one can travel in a step spec."""

from __future__ import annotations

import importlib
from typing import Any

from rivers.exceptions import ConfigurationError


def store_to_json(store: Any) -> dict[str, Any]:
    """Describe a store by its class and constructor arguments."""
    cls = type(store)
    getnewargs = getattr(store, "__getnewargs_ex__", None)
    if getnewargs is None:
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "args": None, "kwargs": None}
    args, kwargs = getnewargs()
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "args": list(args), "kwargs": dict(kwargs)}


def store_from_json(description: dict[str, Any]) -> Any:
    """Rebuild a store described by `store_to_json` (obstore store classes only)."""
    module_name, _, qualname = str(description.get("class", "")).partition(":")
    if not module_name.startswith("obstore"):
        raise ConfigurationError(f"Refusing to rebuild store class '{module_name}:{qualname}': not an obstore store")
    if description.get("args") is None:
        raise ConfigurationError(f"Store '{qualname}' lives in one process and cannot be rebuilt elsewhere")
    cls = getattr(importlib.import_module(module_name), qualname)
    return cls(*description["args"], **description["kwargs"])
