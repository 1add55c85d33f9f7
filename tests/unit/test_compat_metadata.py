"""MetadataValue, Output, Materialization, DynamicOutput and the IO contexts, as rivers 0.6.2 has them.

Every expected repr, message and value here was observed with rivers 0.6.2 (issue 10, items 4 and 6).
Where we accept more than rivers (a `pathlib.Path` for `path`, a `datetime` for `timestamp`, a
`timedelta` for `duration`, a non-string for `json`), the test says so.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore

import rivers as rs
import rivers.exceptions as rex
from rivers.definitions.metadata import coerce_metadata, from_json, to_json
from rivers.results import OutputResult, StepResult
from tests.pipelines import metadata_pipeline as mp
from tests.unit.conftest import make_repo

MV = rs.MetadataValue

# (value, repr, variant name, raw value) -- all observed with rivers 0.6.2
FACTORIES: list[tuple[Any, str, str, Any]] = [
    (MV.int(3), "MetadataValue.int(3)", "Int", 3),
    (MV.int(True), "MetadataValue.int(1)", "Int", 1),
    (MV.int(-5), "MetadataValue.int(-5)", "Int", -5),
    (MV.float_(1.5), "MetadataValue.float_(1.5)", "Float", 1.5),
    (MV.float_(2), "MetadataValue.float_(2.0)", "Float", 2.0),
    (MV.float_(1e20), "MetadataValue.float_(1e20)", "Float", 1e20),
    (MV.float_(1e15), "MetadataValue.float_(1000000000000000.0)", "Float", 1e15),
    (MV.float_(1e-5), "MetadataValue.float_(1e-5)", "Float", 1e-5),
    (MV.float_(0.0001), "MetadataValue.float_(0.0001)", "Float", 0.0001),
    (MV.float_(-0.0), "MetadataValue.float_(-0.0)", "Float", -0.0),
    (MV.float_(2.5e-300), "MetadataValue.float_(2.5e-300)", "Float", 2.5e-300),
    (MV.float_(float("inf")), "MetadataValue.float_(inf)", "Float", float("inf")),
    (MV.bool_(True), "MetadataValue.bool_(true)", "Bool", True),
    (MV.bool_(False), "MetadataValue.bool_(false)", "Bool", False),
    (MV.text("hi 'x' \"y\"\n"), 'MetadataValue.text("hi \'x\' \\"y\\"\\n")', "Text", "hi 'x' \"y\"\n"),
    (MV.text("é\t\x00\x07\\ ✓ \u200b"), 'MetadataValue.text("é\\t\\0\\u{7}\\\\ ✓ \\u{200b}")', "Text",
     "é\t\x00\x07\\ ✓ \u200b"),
    (MV.url("https://example.com/a?b=1"), 'MetadataValue.url("https://example.com/a?b=1")', "Url",
     "https://example.com/a?b=1"),
    (MV.path("/tmp/x"), 'MetadataValue.path("/tmp/x")', "Path", "/tmp/x"),
    (MV.md("# hi"), 'MetadataValue.md("# hi")', "Markdown", "# hi"),
    (MV.json('{"a": 1}'), 'MetadataValue.json("{\\"a\\": 1}")', "Json", '{"a": 1}'),
    (MV.json("{bad"), 'MetadataValue.json("{bad")', "Json", "{bad"),
    (MV.sql("select 1"), 'MetadataValue.sql("select 1")', "Sql", "select 1"),
    (MV.sql("select 1", "postgres"), 'MetadataValue.sql("select 1", dialect="postgres")', "Sql", "select 1"),
    (MV.code_block("x=1"), 'MetadataValue.code_block("x=1")', "CodeBlock", "x=1"),
    (MV.code_block("x=1", language="python"), 'MetadataValue.code_block("x=1", language="python")', "CodeBlock",
     "x=1"),
    (MV.date_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
     "MetadataValue.date_range(datetime.datetime(2024, 1, 1, 0, 0, 0), datetime.datetime(2024, 1, 2, 3, 4, 5, 6))",
     "DateRange", (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 3, 4, 5, 6))),
    (MV.duration(1.5), "MetadataValue.duration(1.5)", "Duration", 1.5),
    (MV.duration(-1), "MetadataValue.duration(-1.0)", "Duration", -1.0),
    (MV.percentage(50), "MetadataValue.percentage(50.0)", "Percentage", 50.0),
    (MV.percentage(150), "MetadataValue.percentage(150.0)", "Percentage", 150.0),
    (MV.data_version("abc"), 'MetadataValue.data_version("abc")', "DataVersion", "abc"),
    (MV.list_([]), "MetadataValue.list_([])", "List", []),
    (MV.list_([MV.int(1), MV.text("a")]), 'MetadataValue.list_([MetadataValue.int(1), MetadataValue.text("a")])',
     "List", [MV.int(1), MV.text("a")]),
    (MV.list_([MV.list_([MV.int(1)])]), "MetadataValue.list_([MetadataValue.list_([MetadataValue.int(1)])])",
     "List", [MV.list_([MV.int(1)])]),
    (MV.bytes(1024), "MetadataValue.bytes(1024)", "Bytes", 1024),
    (MV.image("zzz"), 'MetadataValue.image("zzz")', "Image", "zzz"),
    (MV.timestamp(1.0), "MetadataValue.timestamp(1.0)", "Timestamp", 1.0),
    (MV.timestamp(1), "MetadataValue.timestamp(1.0)", "Timestamp", 1.0),
    (MV.timestamp(1e16), "MetadataValue.timestamp(1e16)", "Timestamp", 1e16),
    (MV.timestamp(1700000000.123456), "MetadataValue.timestamp(1700000000.123456)", "Timestamp", 1700000000.123456),
    (MV.null(), "MetadataValue.null()", "Null", None),
    (MV.Schema(b"abc"), "MetadataValue.schema(<3 bytes>)", "Schema", b"abc"),
]
VARIANTS = ["Bool", "Bytes", "CodeBlock", "DataVersion", "DateRange", "Duration", "Float", "Image", "Int", "Json",
            "List", "Markdown", "Null", "Path", "Percentage", "Schema", "Sql", "Text", "Timestamp", "Url"]


@pytest.mark.parametrize(("value", "text", "variant", "raw"), FACTORIES, ids=[f[1][:48] for f in FACTORIES])
def test_factory_repr_variant_and_raw_value(value: Any, text: str, variant: str, raw: Any) -> None:
    assert repr(value) == text and str(value) == text
    assert type(value) is getattr(MV, variant)
    assert isinstance(value, MV)
    assert all(not isinstance(value, getattr(MV, other)) for other in VARIANTS if other != variant)
    assert value.raw_value() == raw and type(value.raw_value()) is type(raw)


def test_nan_prints_as_rivers_does_and_is_not_equal_to_itself() -> None:
    assert repr(MV.float_(float("nan"))) == "MetadataValue.float_(NaN)"
    assert repr(MV.float_(float("-inf"))) == "MetadataValue.float_(-inf)"
    assert math.isnan(MV.float_(float("nan")).raw_value())
    assert MV.float_(float("nan")) != MV.float_(float("nan"))


def test_variant_classes_are_nested_subclasses() -> None:
    for name in VARIANTS:
        cls = getattr(MV, name)
        assert cls.__name__ == name and cls.__qualname__ == f"MetadataValue.{name}"
        assert cls.__mro__[1:] == (MV, object)
    with pytest.raises(TypeError, match=r"cannot create 'rivers\.MetadataValue' instances"):
        MV()


def test_variant_constructors_and_fields() -> None:
    assert MV.Int(3) == MV.int(3) and MV.Int(value=3) == MV.int(3)
    assert repr(MV.Sql("q", "d")) == 'MetadataValue.sql("q", dialect="d")'
    assert repr(MV.Null()) == "MetadataValue.null()"
    assert repr(MV.Url("bad")) == 'MetadataValue.url("bad")'  # the variant does not check, as in rivers
    assert repr(MV.Float(2)) == "MetadataValue.float_(2.0)"
    sql, code = MV.sql("q", "d"), MV.code_block("c", "l")
    assert (sql.query, sql.dialect, MV.sql("q").dialect) == ("q", "d", None)
    assert (code.code, code.language) == ("c", "l")
    window = MV.date_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    assert (window.start, window.end) == (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))
    assert MV.list_([MV.int(1)]).values == [MV.int(1)]
    assert MV.int(3).value == 3 and MV.Schema(b"x").ipc_bytes == b"x"
    assert (MV.Int.__match_args__, MV.Sql.__match_args__, MV.Null.__match_args__, MV.List.__match_args__,
            MV.DateRange.__match_args__) == (("value",), ("query", "dialect"), (), ("values",), ("start", "end"))
    match MV.sql("select 1", "duckdb"):
        case MV.Sql(query, dialect):
            assert (query, dialect) == ("select 1", "duckdb")
    with pytest.raises(TypeError, match=r"Int.__init__\(\) missing 1 required positional argument: 'value'"):
        MV.Int()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'dialect'"):
        MV.Sql("q")  # type: ignore[call-arg]
    with pytest.raises(AttributeError, match="object has no attribute 'value'"):
        _ = MV.null().value
    with pytest.raises(AttributeError, match=r"attribute 'value' of 'MetadataValue\.Int' objects is not writable"):
        MV.int(3).value = 4


def test_equality_is_by_variant_and_fields_and_values_are_unhashable() -> None:
    assert MV.int(1) == MV.int(1) and not MV.int(1) != MV.int(1)
    assert MV.int(1) != MV.int(2)
    assert MV.int(1) != MV.float_(1.0)
    assert MV.int(1) != 1
    assert MV.text("a") != MV.path("a")
    assert MV.null() == MV.null()
    assert MV.list_([MV.int(1)]) == MV.list_([MV.int(1)])
    assert MV.sql("a", "b") == MV.sql("a", "b") and MV.sql("a", "b") != MV.sql("a")
    for value in (MV.int(1), MV.text("a")):
        with pytest.raises(TypeError, match="unhashable type"):
            hash(value)
    with pytest.raises(TypeError, match="'<' not supported"):
        _ = MV.int(1) < MV.int(2)  # type: ignore[operator]


@pytest.mark.parametrize("value", [f[0] for f in FACTORIES], ids=[f[1][:48] for f in FACTORIES])
def test_values_pickle_copy_and_json_round_trip_as_their_variant(value: Any) -> None:
    through_json = from_json(json.loads(json.dumps(to_json(value))))
    for again in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value), through_json):
        assert type(again) is type(value)
        assert again == value and repr(again) == repr(value)


def test_json_form_keeps_non_finite_floats() -> None:
    for x in (float("nan"), float("inf"), float("-inf")):
        again = from_json(json.loads(json.dumps(to_json(MV.float_(x)), allow_nan=False)))
        assert repr(again) == repr(MV.float_(x))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: MV.int(3.5), TypeError, "'float' object cannot be interpreted as an integer"),
        (lambda: MV.int("3"), TypeError, "'str' object cannot be interpreted as an integer"),
        (lambda: MV.int(2**70), OverflowError, "Python int too large to convert to C long"),
        (lambda: MV.float_("2"), TypeError, "must be real number, not str"),
        (lambda: MV.bool_(1), TypeError, "'int' object is not an instance of 'bool'"),
        (lambda: MV.text(3), TypeError, "'int' object is not an instance of 'str'"),
        (lambda: MV.date_range(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 2)), TypeError,
         "expected a datetime without tzinfo"),
        (lambda: MV.date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 2)), TypeError,
         "'date' object is not an instance of 'datetime'"),
        (lambda: MV.list_([1, "a"]), TypeError, "'int' object is not an instance of 'MetadataValue'"),
        (lambda: MV.list_([{"a": 1}]), TypeError, "'dict' object is not an instance of 'MetadataValue'"),
        (lambda: MV.bytes(-1), OverflowError, "can't convert negative int to unsigned"),
        (lambda: MV.bytes(b"abc"), TypeError, "'bytes' object cannot be interpreted as an integer"),
        (lambda: MV.schema(None), ValueError, "Expected an object with dunder __arrow_c_schema__"),
    ],
)
def test_factories_check_their_argument(make: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_we_accept_more_than_rivers_where_the_meaning_is_plain() -> None:
    assert MV.path(Path("/tmp/x")) == MV.path("/tmp/x")
    assert MV.json({"a": [1]}).raw_value() == '{"a": [1]}'  # serialised; rivers only takes the string
    assert MV.timestamp(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == MV.timestamp(1704067200.0)
    assert MV.duration(dt.timedelta(seconds=3)) == MV.duration(3.0)


# -- url -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://example.com/a?b=1", "https://example.com/a?b=1"), ("ftp://x", "ftp://x/"),
        ("file:///tmp/x", "file:///tmp/x"), ("mailto:a@b.c", "mailto:a@b.c"), ("s3://bucket/key", "s3://bucket/key"),
        ("HTTP://Example.COM", "http://example.com/"), ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443", "https://example.com/"), ("http://example.com:8080", "http://example.com:8080/"),
        ("http://example.com/a b", "http://example.com/a%20b"), ("http://example.com/a/../b", "http://example.com/b"),
        ("S3://Bucket/Key", "s3://Bucket/Key"), ("http://user:pw@host/p", "http://user:pw@host/p"),
        ("http://host?q=1", "http://host/?q=1"), ("http://host#f", "http://host/#f"),
        ("https://例え.jp/", "https://xn--r8jz45g.jp/"), ("http://[::1]:8000/", "http://[::1]:8000/"),
        ("http:/x", "http://x/"), ("http:x", "http://x/"), ("file:x", "file:///x"), ("x:", "x:"),
        ("a+b://x", "a+b://x"), ("ws://h", "ws://h/"), (" http://h ", "http://h/"), ("http://h\t/x", "http://h/x"),
        ("http://1.2.3/", "http://1.2.0.3/"), ("http://0x7f.1/", "http://127.0.0.1/"), ("http://h//a", "http://h//a"),
        ("http://h/a/.", "http://h/a/"), ("http://h/a?x y#z w", "http://h/a?x%20y#z%20w"),
        ("data:text/plain,hi", "data:text/plain,hi"),
    ],
)
def test_url_is_normalised_as_rivers_stores_it(given: str, stored: str) -> None:
    assert MV.url(given).raw_value() == stored


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("not a url", "relative URL without a base"), ("", "relative URL without a base"),
        ("/a/b", "relative URL without a base"), ("example.com", "relative URL without a base"),
        ("1http://x", "relative URL without a base"), ("http://", "empty host"),
        ("http://ex ample.com", "invalid international domain name"),
        ("http://example.com:abc/", "invalid port number"),
        ("http://h:99999/", "invalid port number"), ("http://256.1.1.1/", "invalid IPv4 address"),
    ],
)
def test_invalid_url_raises_invalid_metadata_error(given: str, reason: str) -> None:
    with pytest.raises(rex.InvalidMetadataError, match=f"^Invalid URL: {reason}$"):
        MV.url(given)


def test_invalid_metadata_error_lives_in_rivers_exceptions_only() -> None:
    assert "InvalidMetadataError" in rex.__all__
    assert rex.InvalidMetadataError.__mro__[1] is Exception
    assert not hasattr(rs, "InvalidMetadataError")  # rivers 0.6.2 exports it from rivers.exceptions only


# -- coercion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plain", "coerced"),
    [(1, MV.int(1)), (1.5, MV.float_(1.5)), (True, MV.bool_(True)), ("s", MV.text("s")), (None, MV.null()),
     (2**70, MV.float_(float(2**70))), (MV.url("http://x"), MV.url("http://x/"))],
)
def test_plain_values_are_coerced(plain: Any, coerced: MV) -> None:
    context = rs.OutputContext("x")
    context.add_output_metadata({"k": plain})
    assert context.output_metadata == {"k": coerced}
    assert type(context.output_metadata["k"]) is type(coerced)


@pytest.mark.parametrize("value", [[1], {"a": 1}, (1,), object(), dt.datetime(2024, 1, 1), b"x", {1}])
def test_other_values_are_refused_with_rivers_message(value: Any) -> None:
    name = type(value).__name__
    with pytest.raises(TypeError, match=f"Cannot coerce {name} to MetadataValue. Use MetadataValue.text"):
        rs.OutputContext("x").add_output_metadata({"k": value})
    with pytest.raises(TypeError, match=f"Cannot coerce {name} to MetadataValue.*'k'"):
        coerce_metadata({"k": value})


def test_metadata_must_be_a_dict_with_string_keys() -> None:
    with pytest.raises(TypeError, match="'int' object is not an instance of 'str'"):
        rs.OutputContext("x").add_output_metadata({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="'list' object is not an instance of 'dict'"):
        rs.OutputContext("x").add_output_metadata([("a", 1)])  # type: ignore[arg-type]


# -- OutputContext / InputContext ---------------------------------------------------------------------
def test_output_context_is_constructible_with_the_rest_optional() -> None:
    context = rs.OutputContext("x")
    assert rs.OutputContext(asset_name="x").asset_name == "x"
    assert (context.asset_name, context.asset_metadata, context.partition, context.type_hint) == ("x", None, None, None)
    assert context.output_metadata is None
    assert repr(context) == "OutputContext(asset_name='x')"
    full = rs.OutputContext("x", {"a": "b"}, None, int)  # rivers' positional order
    assert (full.asset_metadata, full.type_hint) == ({"a": "b"}, int)
    context.add_output_metadata({})
    assert context.output_metadata is None
    context.add_output_metadata({"a": 1})
    context.add_output_metadata({"a": 2, "b": 3})
    assert context.output_metadata == {"a": MV.int(2), "b": MV.int(3)}
    context.register_data_version("v")
    assert context.drain_data_version() == "v" and context.drain_data_version() is None


def test_input_context_takes_rivers_positional_order() -> None:
    context = rs.InputContext("x", "y", {"a": "b"}, None, int)
    assert (context.asset_name, context.downstream_asset, context.asset_metadata, context.partition,
            context.type_hint) == ("x", "y", {"a": "b"}, None, int)
    assert repr(context) == "InputContext(asset_name='x', downstream_asset='y')"
    assert rs.InputContext(asset_name="x", downstream_asset="y").asset_metadata is None


class Capture(rs.BaseIOHandler):
    """Keeps the contexts it gets (in-process runs only)."""

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        SEEN.append(context)

    def load_input(self, context: rs.InputContext) -> Any:
        SEEN.append(context)
        return 1


SEEN: list[Any] = []


def test_handler_and_context_get_metadata_values() -> None:
    SEEN.clear()
    in_context: list[Any] = []

    @rs.Asset(io_handler=Capture(), metadata={"owner": "me"})
    def ok(context: rs.AssetExecutionContext) -> rs.Output:
        context.add_output_metadata({"a": 1, "b": 1})
        in_context.append(dict(context.output_metadata))
        return rs.Output(3, metadata={"b": 2, "c": MV.text("t")})

    @rs.Asset(io_handler=Capture())
    def bare() -> int:
        return 1

    @rs.Asset
    def down(ok: int) -> int:
        return ok

    result = make_repo([ok, bare, down]).materialize()
    assert result.success
    assert in_context == [{"a": MV.int(1), "b": MV.int(1)}]
    out_ok = next(c for c in SEEN if isinstance(c, rs.OutputContext) and c.asset_name == "ok")
    assert out_ok.output_metadata == {"a": MV.int(1), "b": MV.int(2), "c": MV.text("t")}
    assert out_ok.asset_metadata == {"owner": "me"}
    out_bare = next(c for c in SEEN if isinstance(c, rs.OutputContext) and c.asset_name == "bare")
    assert out_bare.output_metadata is None and out_bare.asset_metadata is None
    (loaded,) = [c for c in SEEN if isinstance(c, rs.InputContext)]
    assert (loaded.asset_name, loaded.downstream_asset, loaded.asset_metadata) == ("ok", "down", {"owner": "me"})
    assert result.step_results["ok"].outputs[0].metadata == {"a": MV.int(1), "b": MV.int(2), "c": MV.text("t")}


@pytest.mark.parametrize(
    "returned", [lambda: rs.Output(3, metadata={"x": [1]}), lambda: rs.Materialization(metadata={"x": object()})]
)
def test_uncoercible_returned_metadata_fails_the_step_naming_the_type(returned: Any) -> None:
    @rs.Asset(io_handler=Capture())
    def bad() -> Any:
        return returned()

    result = make_repo([bad]).materialize(raise_on_error=False)
    assert not result.success
    ((name, message),) = result.failed_assets
    assert name == "bad" and "Cannot coerce" in message and "to MetadataValue" in message


def test_step_result_json_keeps_metadata_value_types() -> None:
    metadata = dict(mp.EXPECTED, nan=MV.float_(float("nan")))
    result = StepResult(run_id="r", step_key="s", attempt=1, status="succeeded",
                        outputs=[OutputResult(name="s", status="succeeded", metadata=metadata)])
    again = StepResult.model_validate_json(result.model_dump_json())
    got = again.outputs[0].metadata
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in metadata.items()}
    assert {k: repr(v) for k, v in got.items()} == {k: repr(v) for k, v in metadata.items()}
    assert OutputResult(name="s", status="succeeded", metadata={"a": 1}).metadata == {"a": MV.int(1)}


# -- Output / Materialization / DynamicOutput ------------------------------------------------------------
def test_output_defaults_and_reprs() -> None:
    assert rs.Output().value is None
    assert (rs.Output().output_name, rs.Output().metadata, rs.Output().tags, rs.Output().data_version) == (
        None, None, None, None)
    assert repr(rs.Output()) == "Output(has_value=false, has_metadata=false)"
    assert repr(rs.Output(None)) == "Output(has_value=false, has_metadata=false)"
    assert repr(rs.Output(0)) == "Output(has_value=true, has_metadata=false)"
    assert repr(rs.Output(1, metadata={})) == "Output(has_value=true, has_metadata=false)"
    assert repr(rs.Output(5, output_name="x")) == "Output(output_name='x', has_value=true, has_metadata=false)"
    assert repr(rs.Output(5, output_name="x", data_version="v", tags=["t"], metadata={"a": 1})) == (
        "Output(output_name='x', has_value=true, has_metadata=true, data_version='v')")
    assert repr(rs.Output(1, data_version="")) == "Output(has_value=true, has_metadata=false, data_version='')"
    assert rs.Output(1, metadata={"a": 1, "b": MV.int(2)}).metadata == {"a": 1, "b": MV.int(2)}  # kept as given
    assert rs.Output(1, tags=("a",)).tags == ["a"]
    assert rs.Output(5) != rs.Output(5)  # identity, as in rivers
    with pytest.raises(TypeError):
        rs.Output(5, "x")  # type: ignore[misc]
    with pytest.raises(TypeError, match="'list' object is not an instance of 'dict'"):
        rs.Output(1, metadata=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'int' object is not an instance of 'str'"):
        rs.Output(1, output_name=3)  # type: ignore[arg-type]


def test_materialization_takes_output_name() -> None:
    assert repr(rs.Materialization()) == "Materialization(has_metadata=false)"
    full = rs.Materialization(output_name="o", metadata={"a": 1}, data_version="v", tags=["t"])
    assert repr(full) == "Materialization(output_name='o', has_metadata=true, data_version='v')"
    assert (full.output_name, full.metadata, full.data_version, full.tags) == ("o", {"a": 1}, "v", ["t"])
    empty = rs.Materialization()
    assert (empty.output_name, empty.metadata, empty.data_version, empty.tags) == (None, None, None, None)
    with pytest.raises(TypeError):
        rs.Materialization({"a": 1})  # type: ignore[misc]


def test_dynamic_output_repr_and_key() -> None:
    item = rs.DynamicOutput("k", 3)
    assert repr(item) == "DynamicOutput(key='k')" and repr(rs.DynamicOutput("k", None)) == "DynamicOutput(key='k')"
    assert (item.key, item.value) == ("k", 3)
    assert rs.DynamicOutput(key="k", value=[1]).value == [1]
    assert item != rs.DynamicOutput("k", 3) and isinstance(hash(item), int)  # identity, as in rivers
    with pytest.raises(TypeError, match="'int' object is not an instance of 'str'"):
        rs.DynamicOutput(1, 3)  # type: ignore[arg-type]


# -- across processes ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_metadata_values_made_in_a_worker_reach_the_coordinator(tmp_path: Path) -> None:
    handler = mp.TypeRecordingHandler(LocalStore(str(tmp_path)))
    repo = rs.CodeRepository([mp.described], default_executor=rs.Executor.parallel(max_workers=1),
                             default_io_handler=handler)
    result = repo.materialize()
    assert result.success
    metadata = result.step_results["described"].outputs[0].metadata
    assert isinstance(metadata["pid"], MV.Int) and metadata["pid"].raw_value() != os.getpid()
    assert {k: metadata[k] for k in mp.EXPECTED} == mp.EXPECTED
    assert {k: type(metadata[k]) for k in mp.EXPECTED} == {k: type(v) for k, v in mp.EXPECTED.items()}
    saw = dict(item.split("=") for item in metadata["handler_saw"].raw_value().split(","))
    assert saw["rows"] == "MetadataValue.Int" and saw["link"] == "MetadataValue.Url"
    assert saw["window"] == "MetadataValue.DateRange" and saw["nothing"] == "MetadataValue.Null"
    assert metadata["path"] == MV.text("described.pkl")  # the pickle handler's own entries, coerced
