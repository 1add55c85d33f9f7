"""MetadataValue: typed output metadata, as rivers 0.6 defines it, and its JSON form.

    user value ──coerce_metadata──> {key: MetadataValue} ──to_json──> tagged JSON (StepResult)
                                                         <──from_json──

Build values with the factories (`MetadataValue.int(3)`, `.url("https://…")`, …) and test them with the
variant classes (`isinstance(v, MetadataValue.Int)`). Plain `int`, `float`, `bool`, `str` and `None` are
coerced where metadata is added; anything else is a `TypeError`. Values are immutable, compare by variant
and fields, and are unhashable (as in rivers).
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import PlainSerializer, PlainValidator

from rivers.definitions.urls import normalize_url

I64 = (-(2**63), 2**63 - 1)
U64_MAX = 2**64 - 1
TAG = "__metadata_value__"  # the key that marks a MetadataValue in JSON


class MetadataValue:
    """A typed metadata value; build one with a factory, match on the variant classes."""

    __slots__ = ("_fields",)
    __match_args__: ClassVar[tuple[str, ...]] = ()
    _factory: ClassVar[str] = ""
    _fields: tuple[Any, ...]

    Text: ClassVar[type[_Text]]
    Int: ClassVar[type[_Int]]
    Float: ClassVar[type[_Float]]
    Bool: ClassVar[type[_Bool]]
    Url: ClassVar[type[_Url]]
    Path: ClassVar[type[_Path]]
    Json: ClassVar[type[_Json]]
    Markdown: ClassVar[type[_Markdown]]
    Timestamp: ClassVar[type[_Timestamp]]
    Null: ClassVar[type[_Null]]
    Bytes: ClassVar[type[_Bytes]]
    Duration: ClassVar[type[_Duration]]
    Sql: ClassVar[type[_Sql]]
    CodeBlock: ClassVar[type[_CodeBlock]]
    Image: ClassVar[type[_Image]]
    Percentage: ClassVar[type[_Percentage]]
    List: ClassVar[type[_List]]
    DateRange: ClassVar[type[_DateRange]]
    Schema: ClassVar[type[_Schema]]
    DataVersion: ClassVar[type[_DataVersion]]

    def __new__(cls, *args: Any, **kwargs: Any) -> MetadataValue:
        if cls is MetadataValue:
            raise TypeError("cannot create 'rivers.MetadataValue' instances; use a factory such as "
                            "MetadataValue.text(...)")
        return super().__new__(cls)

    def _set(self, *fields: Any) -> None:
        object.__setattr__(self, "_fields", fields)

    @classmethod
    def _from_fields(cls, fields: tuple[Any, ...]) -> MetadataValue:
        """A value from already-checked fields (decoding JSON, unpickling)."""
        value = object.__new__(cls)
        value._set(*fields)
        return value

    # -- factories ----------------------------------------------------------------------------
    @staticmethod
    def text(value: str) -> _Text:
        return _Text(value)

    @staticmethod
    def int(value: builtins.int) -> _Int:
        return _Int(value)

    @staticmethod
    def float_(value: builtins.float) -> _Float:
        return _Float(value)

    @staticmethod
    def bool_(value: builtins.bool) -> _Bool:
        return _Bool(value)

    float = float_  # our earlier names, kept for existing pipelines
    bool = bool_

    @staticmethod
    def url(value: str) -> _Url:
        """A URL, checked and normalised (`InvalidMetadataError` when it is not one)."""
        return _Url(normalize_url(_str(value)))

    @staticmethod
    def path(value: str | os.PathLike[str]) -> _Path:
        return _Path(os.fspath(value) if isinstance(value, os.PathLike) else value)

    @staticmethod
    def json(value: Any) -> _Json:
        """JSON held as its source string; any other value is serialised with `json.dumps`."""
        if not isinstance(value, str):
            import json

            value = json.dumps(value)
        return _Json(value)

    @staticmethod
    def md(value: str) -> _Markdown:
        return _Markdown(value)

    @staticmethod
    def timestamp(value: builtins.float | dt.datetime) -> _Timestamp:
        """POSIX seconds; an aware or naive `datetime` is converted with `.timestamp()`."""
        return _Timestamp(value.timestamp() if isinstance(value, dt.datetime) else value)

    @staticmethod
    def null() -> _Null:
        return _Null()

    @staticmethod
    def bytes(value: builtins.int) -> _Bytes:
        return _Bytes(value)

    @staticmethod
    def duration(value: builtins.float | dt.timedelta) -> _Duration:
        return _Duration(value.total_seconds() if isinstance(value, dt.timedelta) else value)

    @staticmethod
    def sql(query: str, dialect: str | None = None) -> _Sql:
        return _Sql(query, dialect)

    @staticmethod
    def code_block(code: str, language: str | None = None) -> _CodeBlock:
        return _CodeBlock(code, language)

    @staticmethod
    def image(value: str) -> _Image:
        return _Image(value)

    @staticmethod
    def percentage(value: builtins.float) -> _Percentage:
        return _Percentage(value)

    @staticmethod
    def list_(values: list[MetadataValue]) -> _List:
        return _List(values)

    @staticmethod
    def date_range(start: dt.datetime, end: dt.datetime) -> _DateRange:
        return _DateRange(start, end)

    @staticmethod
    def schema(value: Any) -> _Schema:
        """An Arrow schema (anything with `__arrow_c_schema__`; needs pyarrow), kept as IPC bytes."""
        if not hasattr(value, "__arrow_c_schema__"):
            raise ValueError("Expected an object with dunder __arrow_c_schema__")
        try:
            import pyarrow
        except ImportError:
            raise ImportError("MetadataValue.schema needs pyarrow to serialise the schema") from None
        return _Schema(pyarrow.schema(value).serialize().to_pybytes())

    @staticmethod
    def data_version(value: str) -> _DataVersion:
        return _DataVersion(value)

    # -- behaviour of every variant ------------------------------------------------------------
    def raw_value(self) -> Any:
        """The plain Python value (a `Sql`'s query, a `CodeBlock`'s code, a `DateRange`'s pair)."""
        return self._fields[0] if self._fields else None

    def __getattr__(self, name: str) -> Any:
        names = type(self).__match_args__
        if name in names:
            return self._fields[names.index(name)]
        raise AttributeError(f"'{type(self).__qualname__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"attribute '{name}' of '{type(self).__qualname__}' objects is not writable")

    def __eq__(self, other: object) -> builtins.bool:
        if not isinstance(other, MetadataValue):
            return NotImplemented
        return type(self) is type(other) and len(self._fields) == len(other._fields) and all(
            a == b for a, b in zip(self._fields, other._fields, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable, as in rivers

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._factory, self._fields))

    def _repr_args(self) -> str:
        return ", ".join(_repr_field(f) for f in self._fields)

    def __repr__(self) -> str:
        return f"MetadataValue.{self._factory}({self._repr_args()})"


# -- field checks, with rivers' messages ---------------------------------------------------------
def _type_name(value: object) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _instance(value: Any, cls: type | tuple[type, ...], name: str | None = None) -> Any:
    if not isinstance(value, cls):
        expected = name or getattr(cls, "__name__", "")
        raise TypeError(f"'{type(value).__name__}' object is not an instance of '{expected}'")
    return value


def _str(value: Any) -> str:
    return _instance(value, str)  # type: ignore[no-any-return]


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _i64(value: Any) -> int:
    number = value.__index__() if hasattr(value, "__index__") and not isinstance(value, float) else None
    if number is None:
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
    if not I64[0] <= number <= I64[1]:
        raise OverflowError("Python int too large to convert to C long")
    return int(number)


def _u64(value: Any) -> int:
    if isinstance(value, float) or not hasattr(value, "__index__"):
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
    number = int(value.__index__())
    if number < 0:
        raise OverflowError("can't convert negative int to unsigned")
    if number > U64_MAX:
        raise OverflowError("Python int too large to convert to C unsigned long")
    return number


def _real(value: Any) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"must be real number, not {_type_name(value)}")
    return float(value)


def _naive(value: Any) -> dt.datetime:
    _instance(value, dt.datetime)
    if value.tzinfo is not None:
        raise TypeError("expected a datetime without tzinfo")
    return value  # type: ignore[no-any-return]


def _values(values: Any) -> list[MetadataValue]:
    if not isinstance(values, list | tuple):
        raise TypeError(f"'{type(values).__name__}' object is not an instance of 'list'")
    return [_instance(v, MetadataValue) for v in values]


# -- reprs as rivers prints them (Rust's Debug formatting) ----------------------------------------
_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def rust_str(text: str) -> str:
    """`text` quoted as Rust's `{:?}` prints a string."""
    out = [_ESCAPES.get(c) or (c if c.isprintable() else f"\\u{{{ord(c):x}}}") for c in text]
    return '"' + "".join(out) + '"'


def rust_float(value: float) -> str:
    """`value` as Rust's `{:?}` prints an f64 (`1.0`, `1e16`, `NaN`, `inf`)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def _repr_datetime(value: dt.datetime) -> str:
    parts = [value.year, value.month, value.day, value.hour, value.minute, value.second]
    if value.microsecond:
        parts.append(value.microsecond)
    return f"datetime.datetime({', '.join(map(str, parts))})"


def _repr_field(value: Any) -> str:
    if isinstance(value, builtins.bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return rust_str(value)
    if isinstance(value, builtins.float):
        return rust_float(value)
    if isinstance(value, dt.datetime):
        return _repr_datetime(value)
    if isinstance(value, list):
        return "[" + ", ".join(repr(v) for v in value) + "]"
    return repr(value)


# -- the variants ------------------------------------------------------------------------------
def _variant(
    name: str, factory: str, fields: tuple[str, ...], doc: str, check: Callable[[Any], Any] | None = None
) -> Callable[[type], type]:
    """Name a variant class `MetadataValue.<name>`, attach it there, and give a one-field variant its
    `__init__(value)` that checks the value with `check`."""

    def attach(cls: type) -> type:
        cls.__name__, cls.__qualname__, cls.__doc__ = name, f"MetadataValue.{name}", doc
        cls.__match_args__ = fields  # type: ignore[attr-defined,misc]
        cls._factory = factory  # type: ignore[attr-defined]
        if check is not None:
            def __init__(self: MetadataValue, value: Any) -> None:
                self._set(check(value))

            cls.__init__ = __init__  # type: ignore[misc]
        cls.__init__.__qualname__ = f"{name}.__init__"  # type: ignore[misc]
        type.__setattr__(MetadataValue, name, cls)
        _VARIANTS[factory] = cls
        return cls

    return attach


_VARIANTS: dict[str, type] = {}


@_variant("Text", "text", ("value",), "A free-form string value.", _str)
class _Text(MetadataValue):
    __slots__ = ()


@_variant("Int", "int", ("value",), "An integer value (64-bit).", _i64)
class _Int(MetadataValue):
    __slots__ = ()


@_variant("Float", "float_", ("value",), "A floating-point value.", _real)
class _Float(MetadataValue):
    __slots__ = ()


@_variant("Bool", "bool_", ("value",), "A boolean value.", lambda v: _instance(v, builtins.bool))
class _Bool(MetadataValue):
    __slots__ = ()


@_variant("Url", "url", ("value",), "A URL, rendered as a link.", _str)
class _Url(MetadataValue):
    __slots__ = ()


@_variant("Path", "path", ("value",), "A filesystem path.", _str)
class _Path(MetadataValue):
    __slots__ = ()


@_variant("Json", "json", ("value",), "A JSON payload, held as its source string.", _str)
class _Json(MetadataValue):
    __slots__ = ()


@_variant("Markdown", "md", ("value",), "Markdown source.", _str)
class _Markdown(MetadataValue):
    __slots__ = ()


@_variant("Timestamp", "timestamp", ("value",), "A POSIX timestamp in seconds.", _real)
class _Timestamp(MetadataValue):
    __slots__ = ()


@_variant("Null", "null", (), "An explicit null.")
class _Null(MetadataValue):
    __slots__ = ()

    def __init__(self) -> None:
        self._set()


@_variant("Bytes", "bytes", ("value",), "A byte count.", _u64)
class _Bytes(MetadataValue):
    __slots__ = ()


@_variant("Duration", "duration", ("value",), "A duration in seconds.", _real)
class _Duration(MetadataValue):
    __slots__ = ()


def _labelled_repr(self: MetadataValue) -> str:
    """A text with its optional label: `"select 1", dialect="postgres"`."""
    first, second = self._fields
    return rust_str(first) + ("" if second is None else f", {self.__match_args__[1]}={rust_str(second)}")


@_variant("Sql", "sql", ("query", "dialect"), "A SQL query, optionally with its dialect.")
class _Sql(MetadataValue):
    __slots__ = ()
    _repr_args = _labelled_repr

    def __init__(self, query: str, dialect: str | None) -> None:
        self._set(_str(query), _opt_str(dialect))


@_variant("CodeBlock", "code_block", ("code", "language"), "Source code, optionally with its language.")
class _CodeBlock(MetadataValue):
    __slots__ = ()
    _repr_args = _labelled_repr

    def __init__(self, code: str, language: str | None) -> None:
        self._set(_str(code), _opt_str(language))


@_variant("Image", "image", ("value",), "An image: a URL or a data URI.", _str)
class _Image(MetadataValue):
    __slots__ = ()


@_variant("Percentage", "percentage", ("value",), "A percentage.", _real)
class _Percentage(MetadataValue):
    __slots__ = ()


@_variant("List", "list_", ("values",), "A list of metadata values.")
class _List(MetadataValue):
    __slots__ = ()

    def __init__(self, values: list[MetadataValue]) -> None:
        self._set(_values(values))

    def raw_value(self) -> list[MetadataValue]:
        return list(self._fields[0])


@_variant("DateRange", "date_range", ("start", "end"), "A half-open [start, end) range of naive datetimes.")
class _DateRange(MetadataValue):
    __slots__ = ()

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self._set(_naive(start), _naive(end))

    def raw_value(self) -> tuple[dt.datetime, dt.datetime]:
        return self._fields[0], self._fields[1]


@_variant("Schema", "schema", ("ipc_bytes",), "An Arrow schema as IPC bytes.")
class _Schema(MetadataValue):
    __slots__ = ()

    def __init__(self, ipc_bytes: builtins.bytes) -> None:
        self._set(builtins.bytes(_instance(ipc_bytes, (builtins.bytes, bytearray), "bytes")))

    def raw_value(self) -> Any:
        """A `pyarrow.Schema` when pyarrow can read the bytes, else the bytes."""
        try:
            import pyarrow

            return pyarrow.ipc.read_schema(pyarrow.py_buffer(self._fields[0]))
        except Exception:  # noqa: BLE001 - no pyarrow, or bytes it cannot read
            return self._fields[0]

    def _repr_args(self) -> str:
        schema = self.raw_value()
        if isinstance(schema, builtins.bytes):
            return f"<{len(schema)} bytes>"
        return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"


@_variant("DataVersion", "data_version", ("value",), "A content-addressable data version.", _str)
class _DataVersion(MetadataValue):
    __slots__ = ()


def _rebuild(factory: str, fields: tuple[Any, ...]) -> MetadataValue:
    return _VARIANTS[factory]._from_fields(fields)  # type: ignore[attr-defined,no-any-return]


# -- coercion ----------------------------------------------------------------------------------
def to_metadata_value(value: Any) -> MetadataValue:
    """`value` as a MetadataValue: plain int, float, bool, str and None are coerced; others refused."""
    if isinstance(value, MetadataValue):
        return value
    if value is None:
        return _Null()
    if isinstance(value, builtins.bool):
        return _Bool(value)
    if isinstance(value, numbers.Integral):
        number = int(value)
        return _Int(number) if I64[0] <= number <= I64[1] else _Float(float(number))
    if isinstance(value, numbers.Real):
        return _Float(value)
    if isinstance(value, str):
        return _Text(value)
    raise TypeError(
        f"Cannot coerce {type(value).__name__} to MetadataValue. Use MetadataValue.text(), .int(), etc."
    )


def coerce_metadata(metadata: Mapping[str, Any] | None) -> dict[str, MetadataValue]:
    """Every value of `metadata` as a MetadataValue (`TypeError` naming the key when one cannot be)."""
    if metadata is None:
        return {}
    _instance(metadata, Mapping, "dict")
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        _str(key)
        try:
            out[key] = to_metadata_value(value)
        except TypeError as exc:
            raise TypeError(f"{exc} (metadata key '{key}')") from None
    return out


def merge_metadata(
    current: dict[str, MetadataValue] | None, added: Mapping[str, Any] | None
) -> dict[str, MetadataValue] | None:
    """`current` updated with `added` (coerced); `None` while there is nothing."""
    merged = {**(current or {}), **coerce_metadata(added)}
    return merged or None


# -- JSON: a tagged form that round-trips every variant ---------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, MetadataValue):
        return to_json(value)
    if isinstance(value, builtins.float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, builtins.bytes):
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if TAG in value:
        return from_json(value)
    if "float" in value:
        return builtins.float(value["float"])
    if "datetime" in value:
        return dt.datetime.fromisoformat(value["datetime"])
    return base64.b64decode(value["bytes"])


def to_json(value: MetadataValue) -> dict[str, Any]:
    """`{"__metadata_value__": "<factory>", "fields": [...]}`: JSON-safe, exact for every variant."""
    return {TAG: value._factory, "fields": [_encode(f) for f in value._fields]}


def from_json(data: Mapping[str, Any]) -> MetadataValue:
    factory = data[TAG]
    if factory not in _VARIANTS:
        raise ValueError(f"Unknown MetadataValue kind in JSON: {factory!r}")
    return _rebuild(factory, tuple(_decode(f) for f in data["fields"]))


def _validate_metadata_dict(value: Any) -> dict[str, MetadataValue]:
    if not isinstance(value, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(value).__name__}")
    return {
        k: from_json(v) if isinstance(v, Mapping) and TAG in v else to_metadata_value(v) for k, v in value.items()
    }


#: A pydantic field type: `{key: MetadataValue}` in Python, the tagged form in JSON.
MetadataDict = Annotated[
    dict[str, MetadataValue],
    PlainValidator(_validate_metadata_dict),
    PlainSerializer(lambda d: {k: to_json(v) for k, v in d.items()}, when_used="json"),
]
