"""Definitions for tests/unit/test_compat_metadata.py: metadata values made in a pool process."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import rivers as rs

MV = rs.MetadataValue

#: What `described` reports besides its pid and what the handler saw.
EXPECTED = {
    "rows": MV.int(3),
    "ratio": MV.float_(0.5),
    "ok": MV.bool_(True),
    "note": MV.text("hi"),
    "nothing": MV.null(),
    "link": MV.url("https://example.com"),
    "query": MV.sql("select 1", "duckdb"),
    "code": MV.code_block("x = 1"),
    "window": MV.date_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
    "items": MV.list_([MV.int(1), MV.text("a"), MV.list_([MV.null()])]),
    "size": MV.bytes(2**40),
    "took": MV.duration(1.25),
    "share": MV.percentage(12.5),
    "at": MV.timestamp(1.0),
    "version": MV.data_version("abc"),
    "doc": MV.md("# hi"),
    "payload": MV.json('{"a": 1}'),
    "where": MV.path("/tmp/x"),
    "picture": MV.image("data:image/png;base64,AAA"),
    "schema": MV.Schema(b"\x00\x01ipc"),
    "huge": MV.float_(1e300),
}


class TypeRecordingHandler(rs.PickleIOHandler):
    """Adds which MetadataValue variant each entry had when it reached the handler."""

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        seen = context.output_metadata or {}
        kinds = ",".join(f"{key}={type(value).__qualname__}" for key, value in sorted(seen.items()))
        super().handle_output(context, obj)
        context.add_output_metadata({"handler_saw": kinds})


@rs.Asset
def described(context: rs.AssetExecutionContext) -> rs.Output:
    context.add_output_metadata({"rows": 3, "ratio": 0.5, "ok": True, "note": "hi", "nothing": None})
    context.add_output_metadata({"pid": os.getpid()})
    typed = {k: v for k, v in EXPECTED.items() if k not in ("rows", "ratio", "ok", "note", "nothing")}
    return rs.Output(7, metadata=typed)
