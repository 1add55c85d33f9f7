"""What runs inside a pool process: read a spec, run the step, hand back the StepResult JSON.

`serve` is the process's whole life: set up, then take (ticket, spec JSON, route) from the pipe, run it,
send the result back, until the pool sends None or the process owning the pool is gone. When its own report
claimed a downstream job (one the report released), the process runs that next, and the result it sends says so.

In a rivers-worker the pool processes also hold the worker's leases (an AttemptOwner): right before each
output write they check that the attempt still holds its lease, so an attempt whose lease expired (its
worker paused or cut off past the lease) never writes over the output of the retry; and they report the
attempt to `route` themselves, fenced the same way, before handing the result back (marked reported).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import cloudpickle

from rivers import logs, runtime, signing
from rivers.exceptions import ExecutionError, SpecError
from rivers.results import StepResult
from rivers.runtime import Fence, StepCall, run_step, run_step_async
from rivers.spec import UnreadableSpec, call_from_spec, read_spec, teardown_rebuilt

STEP_PROCESS_NAME = "rivers-step-process"  # multiprocessing's name of every pool process
PARENT_POLL_S = 0.5  # how soon a pool process notices that the process owning its pool is gone
REPORTED, STALE = "reported", "stale"  # PoolResult.reported: what the step process's own report found
_owner: AttemptOwner | None = None
_pickle_exceptions = True
_loop: asyncio.AbstractEventLoop | None = None


@dataclass(frozen=True, slots=True)
class NextJob:
    """A job that a step process's own report released and claimed for its worker: that process runs it next."""

    ticket: str
    spec_json: str
    route: str  # where it reports it


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a step process's report claimed but that it may not run (its signature does not verify): the
    worker's main process takes it as one it claimed itself (and refuses it)."""

    job_id: str
    data: bytes
    signature: bytes | None


@dataclass(frozen=True, slots=True)
class PoolResult:
    """What a pool process hands back for one ticket."""

    result_json: str  # the StepResult
    failure: str  # "<ExcType>: <message>" when the step failed, else ""
    exception: bytes | None = None  # the pickled exception (embedded pools only), to re-raise with its own type
    reported: str = ""  # REPORTED or STALE once the step process reported it itself; "" = not reported yet
    next: NextJob | None = None  # what this process runs now, claimed by its report (its pool and worker learn it)
    claimed: ClaimedJob | None = None  # claimed by its report, for the worker to take


class AttemptOwner:
    """What a step process holds of its attempts when they are leased (a rivers-worker's, a step pod's): the
    fence of each output write and the fenced report. Picklable: it reaches pool processes as a start argument."""

    def fence(self, ticket: str, step_key: str) -> Fence:  # pragma: no cover - an interface
        raise NotImplementedError

    def report(self, ticket: str, route: str, result: PoolResult) -> str:  # pragma: no cover - an interface
        """Report the attempt to `route`: REPORTED, or STALE when its lease is gone (raises when Redis is)."""
        raise NotImplementedError

    def report_and_take(self, ticket: str, route: str, result: PoolResult) -> PoolResult:
        """Report the attempt: `result` marked REPORTED or STALE, and with `next` set when the report claimed a job
        for this process to run next (a downstream it released)."""
        return dataclasses.replace(result, reported=self.report(ticket, route, result))


def configure(key: bytes | None, log_level: int, owner: AttemptOwner | None, tee: bool = False) -> None:
    """Set this process up to run steps from specs. With an owner, steps belong to a rivers-worker or a step
    pod, which send result JSON only: no pickled exceptions. With `tee`, a step's stdout and stderr also go
    to this process's own (a step pod's log, which its launcher attaches to a pod that died)."""
    global _owner, _pickle_exceptions
    runtime.TEE_STREAMS = tee
    signing.use_key(key)
    _owner = owner
    _pickle_exceptions = owner is None
    for name in ("code-repo.assets", "code-repo.tasks"):  # context.log records must reach the step's capture
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logs.step_log_level(log_level))


def serve(conn: Connection, key: bytes, log_level: int, owner: AttemptOwner | None) -> None:
    """The main loop of a pool process."""
    configure(key, log_level, owner)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="rivers-parent-watch", daemon=True).start()
    try:
        while (message := _receive(conn)) is not None:
            ticket, spec_json, route = message
            while True:
                result = PoolResult(*run_spec(spec_json, ticket))
                if route is not None and _owner is not None:
                    result = _reported(_owner, ticket, route, result)
                conn.send(result)
                if result.next is None:
                    break
                ticket, spec_json, route = result.next.ticket, result.next.spec_json, result.next.route
    finally:  # the pool stops (or its owner is gone): resources set up here are torn down here
        teardown_rebuilt()


def _reported(owner: AttemptOwner, ticket: str, route: str, result: PoolResult) -> PoolResult:
    """The result, reported from here; unmarked when Redis could not be reached (the pool's owner tries then)."""
    try:
        return owner.report_and_take(ticket, route, result)
    except Exception:  # noqa: BLE001 - Redis unreachable past its retries: the worker reports it or its lease ends
        return result


def _receive(conn: Connection) -> tuple[str, str, str | None] | None:
    try:
        message: tuple[str, str, str | None] | None = conn.recv()
    except (EOFError, OSError):
        return None
    return message


def _exit_with_parent(parent: int) -> None:
    """End this pool process once the process owning the pool is gone (a SIGKILLed worker takes its pool along).

    loky's processes never check for their parent: an idle one would wait for work forever, a busy one finish
    a step whose lease has gone with its worker. A thread watching the parent pid, unlike PR_SET_PDEATHSIG,
    does not fire when the thread that happened to start the process ends.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def run_spec(spec_json: str, ticket: str) -> tuple[str, str, bytes | None]:
    """Run one step: (StepResult JSON, "<ExcType>: <message>" of a failure or "", the pickled exception or None)."""
    result = _run(spec_json, ticket)
    failure = result.error.summary() if result.error is not None else ""
    exception = _pickled_exception(result.exception) if _pickle_exceptions else None
    return result.model_dump_json(), failure, exception


def _run(spec_json: str, ticket: str) -> StepResult:
    try:
        spec = read_spec(spec_json)
    except UnreadableSpec as exc:
        header = exc.header
        return StepResult.failed(header.run_id, header.step_key, header.attempt, header.output_names, exc)
    with runtime.step_log(spec.run_id, spec.step_key, spec.attempt, whole_process=True) as log:
        try:
            call = call_from_spec(spec)  # imports the step's code: an exit or a crash here ends only this step
            if _owner is not None:
                _fence(call, _owner.fence(ticket, spec.step_key))
            result = _event_loop().run_until_complete(run_step_async(call)) if spec.is_async else run_step(call)
        except SpecError as exc:
            result = StepResult.failed(spec.run_id, spec.step_key, spec.attempt, [o.name for o in spec.outputs], exc)
        except SystemExit as exc:  # the user's code asked to exit: that ends the step, not the pool process
            stopped = ExecutionError(f"'{spec.step_key}' called sys.exit({exc.code!r}) in a worker process")
            result = StepResult.failed(spec.run_id, spec.step_key, spec.attempt, [o.name for o in spec.outputs],
                                       stopped)
    result.logs = list(log.entries)  # with what importing the step's code printed
    return result


def _fence(call: StepCall, fence: Fence) -> None:
    call.fence = fence
    for member in call.members:
        _fence(member, fence)


def _event_loop() -> asyncio.AbstractEventLoop:
    """One loop per pool process, kept between async steps (their clients may cache loop-bound state)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop


def _pickled_exception(exc: BaseException | None) -> bytes | None:
    """The exception for the embedded coordinator to re-raise with its own type, if it pickles."""
    if exc is None:
        return None
    try:
        return cloudpickle.dumps(exc)
    except (Exception, SystemExit):  # noqa: BLE001 - the coordinator rebuilds the type from the StepError instead
        return None
