"""A rivers step as an RQ job, and the report that comes back: the bytes that cross Redis. Pure functions.

Job hash `rq:job:<id>` holds RQ's fields, so RQ's tools can show it, with `data` = the JSON
`["rivers.distributed.jobs.run_step_job", null, [spec_json, reply_to], {}]` (zlib of it above COMPRESS_ABOVE
bytes; RQ reads either, see `job_payload`), plus `rivers_signature`:
the HMAC-SHA256 of `<job id>\\n<data>` under RIVERS_SECRET when it is set. A worker checks it over the
exact bytes it claimed before it decompresses, parses or imports anything.

A report, pushed on the run's results list and kept in its reports hash, is `<job id> <signature> <StepResult
JSON>`; the signature (HMAC of `<job id> <JSON>`, or `-` without a secret) is checked before the JSON is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass

from rivers import defaults
from rivers.exceptions import RefusedJob
from rivers.queues import keys
from rivers.queues.rq_view import rq_time

NO_SIGNATURE = "-"
COMPRESS_ABOVE = 8192  # a job's JSON is stored as it is up to this size: zlib's set-up (~100 µs a job on a small
# VM, on the path from a step's end to its downstream's start) buys little on a ~1 KB spec


@dataclass(frozen=True, slots=True)
class StepJob:
    """A claimed job: its id, the step's spec (JSON) and where its report goes."""

    job_id: str
    spec_json: str
    reply_to: str


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class JobData:
    """A new job's id, `data` and signature: what can be built before it is sent (its times cannot)."""

    job_id: str
    data: bytes
    signature: str | None


def job_data(job_id: str, spec_json: str, reply_to: str, key: bytes | None) -> JobData:
    raw = json.dumps([keys.STEP_JOB_FUNCTION, None, [spec_json, reply_to], {}]).encode()
    data = raw if len(raw) <= COMPRESS_ABOVE else zlib.compress(raw)
    return JobData(job_id, data, _mac(key, job_id.encode(), b"\n", data) if key is not None else None)


def fields_of(job: JobData, queue: str, description: str) -> dict[str, str | bytes]:
    """The fields of a new job's hash, enqueued now."""
    now = rq_time()
    fields: dict[str, str | bytes] = {
        keys.JOB_DATA: job.data, keys.JOB_STATUS: keys.QUEUED, keys.JOB_ORIGIN: queue,
        keys.JOB_DESCRIPTION: description, keys.JOB_CREATED_AT: now, keys.JOB_ENQUEUED_AT: now,
        keys.JOB_TIMEOUT: "-1", keys.JOB_RESULT_TTL: "0",
    }
    if job.signature is not None:
        fields[keys.JOB_SIGNATURE] = job.signature
    return fields


def job_fields(job_id: str, spec_json: str, reply_to: str, queue: str, description: str,
               key: bytes | None) -> dict[str, str | bytes]:
    """The fields of a new job's hash."""
    return fields_of(job_data(job_id, spec_json, reply_to, key), queue, description)


def decode_job(job_id: str, data: bytes, signature: bytes | None, key: bytes | None) -> StepJob:
    """A claimed job's step, or RefusedJob: checked signature first, then a bounded decompression."""
    if key is None and signature:
        raise RefusedJob(f"job {job_id} is signed, but this worker has no RIVERS_SECRET to check it with: "
                         "set the coordinators' RIVERS_SECRET on every worker")
    if key is not None:
        if signature is None:
            raise RefusedJob(f"job {job_id} is not signed and RIVERS_SECRET is set: refusing it")
        if not hmac.compare_digest(_mac(key, job_id.encode(), b"\n", data), signature.decode(errors="replace")):
            raise RefusedJob(f"job {job_id} has a signature that does not verify under RIVERS_SECRET: refusing it")
    try:
        raw = job_payload(data, defaults.MAX_PAYLOAD_BYTES)
        if raw is None:
            raise RefusedJob(f"job {job_id} is larger than {defaults.MAX_PAYLOAD_BYTES} bytes once decompressed "
                             "(RIVERS_MAX_PAYLOAD_BYTES): refusing it")
        func_name, _instance, args, _kwargs = json.loads(raw)
    except (zlib.error, ValueError, TypeError) as exc:
        raise RefusedJob(f"job {job_id} is not a JSON RQ job: {exc}") from None
    if func_name != keys.STEP_JOB_FUNCTION:
        raise RefusedJob(f"job {job_id} calls {func_name!r}, not a rivers step: refusing it")
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, str) for a in args)):
        raise RefusedJob(f"job {job_id} has malformed step arguments")
    if not (args[1].startswith(keys.RUN_PREFIX) and args[1].endswith(":results")):
        raise RefusedJob(f"job {job_id} asks for its report on {args[1]!r}, not a rivers results list")
    return StepJob(job_id, args[0], args[1])


def job_payload(data: bytes, limit: int) -> bytes | None:
    """A job's JSON from its `data`, stored as it is or zlib-compressed (as RQ reads it: zlib, else the bytes);
    None past `limit` bytes, found without inflating more than that (a zlib bomb costs nothing)."""
    if data[:1] == b"[":
        return data if len(data) <= limit else None
    inflater = zlib.decompressobj()
    raw = inflater.decompress(data, limit + 1)
    return None if len(raw) > limit or inflater.unconsumed_tail else raw


def encode_report(job_id: str, result_json: str, key: bytes | None) -> str:
    signature = _mac(key, job_id.encode(), b" ", result_json.encode()) if key is not None else NO_SIGNATURE
    return f"{job_id} {signature} {result_json}"


def decode_report(message: bytes | str, key: bytes | None) -> tuple[str, str]:
    """(job id, StepResult JSON) of a report; ValueError if it is malformed or, with a key, not signed by it."""
    text = message.decode() if isinstance(message, bytes) else message
    job_id, signature, result_json = [*text.split(" ", 2), "", ""][:3]
    if not job_id or not result_json:
        raise ValueError("not a rivers report")
    if key is not None and not hmac.compare_digest(
            _mac(key, job_id.encode(), b" ", result_json.encode()), signature):
        raise ValueError(f"the report for job {job_id} is not signed with RIVERS_SECRET")
    return job_id, result_json


def run_step_job(spec_json: str, reply_to: str) -> None:
    """The job function named in every rivers job; steps run in `rivers-worker`, never in a plain RQ worker."""
    raise RuntimeError("rivers steps run in `rivers-worker --executor <name>`, not in a plain `rq worker`")
