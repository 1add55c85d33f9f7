"""A job's `data`: the JSON as it is when small, zlib above COMPRESS_ABOVE; both read by rivers (bounded) and RQ."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from rivers import defaults
from rivers.distributed.jobs import COMPRESS_ABOVE, decode_job, job_fields, job_payload
from rivers.exceptions import RefusedJob
from rivers.queues import keys
from tests.redis_server import RedisServer

REPLY_TO = "rivers:run:r:results"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with RedisServer() as server:
        conn = server.client()
        yield conn
        conn.close()


@pytest.mark.parametrize("size", [700, COMPRESS_ABOVE * 4], ids=["small: as it is", "large: zlib"])
def test_a_job_round_trips_through_rivers_and_rq(client: Any, size: int) -> None:
    spec_json = json.dumps({"padding": "x" * size})
    fields = job_fields("job1", spec_json, REPLY_TO, "rivers:parallel", "r step", b"key")
    data = fields[keys.JOB_DATA]
    assert isinstance(data, bytes)
    assert (data[:1] == b"[") == (size < COMPRESS_ABOVE)
    job = decode_job("job1", data, str(fields[keys.JOB_SIGNATURE]).encode(), b"key")
    assert (job.spec_json, job.reply_to) == (spec_json, REPLY_TO)
    client.hset(keys.job_key("job1"), mapping=fields)
    seen = Job.fetch("job1", connection=client, serializer=JSONSerializer)  # what rq-dashboard shows
    assert seen.args == [spec_json, REPLY_TO]


def test_payloads_past_the_limit_are_refused_without_inflating_them(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = json.dumps(["f", None, ["x" * 5000, REPLY_TO], {}]).encode()
    assert job_payload(raw, len(raw)) == raw
    assert job_payload(raw, len(raw) - 1) is None
    bomb = zlib.compress(bytes(64 << 20), 1)  # 64 MiB of zeros in ~64 KB
    assert job_payload(bomb, 1_000_000) is None
    monkeypatch.setattr(defaults, "MAX_PAYLOAD_BYTES", 1000)
    with pytest.raises(RefusedJob, match="larger than 1000 bytes once decompressed"):
        decode_job("j", raw, None, None)


def test_neither_json_nor_zlib_is_refused() -> None:
    with pytest.raises(RefusedJob, match="is not a JSON RQ job"):
        decode_job("j", b"\x80\x04garbage", None, None)
    with pytest.raises(RefusedJob, match="is not a JSON RQ job"):
        decode_job("j", b"[not json", None, None)
