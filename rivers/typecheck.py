"""A shallow, fast check of a value against a return annotation."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

_SKIP = (inspect.Signature.empty, Any, None)


def matches(value: Any, hint: Any) -> bool:
    """True when `value` fits `hint`; generics are checked by their origin only, unknowns pass."""
    if hint in _SKIP or isinstance(hint, (str, typing.TypeVar)):
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (float, int)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is typing.Annotated:
        return matches(value, typing.get_args(hint)[0])
    if origin is not None:
        hint = origin
    if isinstance(hint, type):
        try:
            return isinstance(value, hint)
        except TypeError:  # runtime-uncheckable classes (protocols, ...)
            return True
    return True


def describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
