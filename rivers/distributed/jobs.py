"""A rivers step as an RQ job: what goes into the job, what comes back, and the job function itself.

The job's data is RQ's JSON form of `(STEP_JOB_FUNCTION, None, [spec_json, reply_to], {})`. A worker
reports `"<job id> <StepResult JSON>"` on the `reply_to` list. Pure functions, no Redis calls, except
`run_step_job`, which lets a plain `rq worker --serializer json rivers:parallel` run steps too.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from rivers.exceptions import SpecError
from rivers.queues import keys
from rivers.results import StepResult


@dataclass(frozen=True, slots=True)
class StepJob:
    """A claimed job: its id, the step's spec (JSON) and where its result goes."""

    job_id: str
    spec_json: str
    reply_to: str


def job_args(spec_json: str, reply_to: str) -> list[str]:
    return [spec_json, reply_to]


def decode_job(job_id: str, compressed: bytes) -> StepJob:
    """A claimed job's data, refused (SpecError) unless it is a rivers step job."""
    try:
        func_name, _instance, args, _kwargs = json.loads(zlib.decompress(compressed))
    except (zlib.error, ValueError, TypeError) as exc:
        raise SpecError(f"job {job_id} is not a JSON RQ job: {exc}") from None
    if func_name != keys.STEP_JOB_FUNCTION:
        raise SpecError(f"job {job_id} calls {func_name!r}, not a rivers step; refusing to run it")
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, str) for a in args)):
        raise SpecError(f"job {job_id} has malformed step arguments")
    return StepJob(job_id, args[0], args[1])


def encode_reply(job_id: str, result: StepResult) -> str:
    return f"{job_id} {result.model_dump_json()}"


def decode_reply(message: bytes | str) -> tuple[str, StepResult]:
    text = message.decode() if isinstance(message, bytes) else message
    job_id, _, result_json = text.partition(" ")
    return job_id, StepResult.model_validate_json(result_json)


def run_step_job(spec_json: str, reply_to: str) -> str:
    """The job function: run the step here and push its result (used by a plain RQ worker)."""
    from rq import get_current_job

    from rivers.executors.worker_side import run_spec

    job = get_current_job()
    assert job is not None
    result_json, _ = run_spec(spec_json, job.id)
    job.connection.rpush(reply_to, f"{job.id} {result_json}")
    return "reported"
