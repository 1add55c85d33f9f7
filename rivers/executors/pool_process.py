"""What runs inside a pool process: read a spec, run the step, hand back the StepResult JSON.

`serve` is the process's whole life: set up, then take (ticket, spec JSON) from the pipe, run it,
send the result back, until the pool sends None or the process owning the pool is gone.

In a rivers-worker the pool processes also hold the fence of the worker's leases: right before each
output write they check that the attempt still holds its lease, so an attempt whose lease expired
(its worker paused or cut off past the lease) never writes over the output of the retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from multiprocessing.connection import Connection

import cloudpickle

from rivers import logs, runtime, signing
from rivers.exceptions import ExecutionError, SpecError
from rivers.results import StepResult
from rivers.runtime import Fence, StepCall, run_step, run_step_async
from rivers.spec import UnreadableSpec, call_from_spec, read_spec, teardown_rebuilt

STEP_PROCESS_NAME = "rivers-step-process"  # multiprocessing's name of every pool process
PARENT_POLL_S = 0.5  # how soon a pool process notices that the process owning its pool is gone
_fence_factory: FenceFactory | None = None
_pickle_exceptions = True
_loop: asyncio.AbstractEventLoop | None = None


class FenceFactory:
    """Makes the fence of one attempt; picklable, so that it reaches pool processes as an initializer argument."""

    def __call__(self, ticket: str, step_key: str) -> Fence:  # pragma: no cover - an interface
        raise NotImplementedError


def configure(key: bytes | None, log_level: int, fence_factory: FenceFactory | None, tee: bool = False) -> None:
    """Set this process up to run steps from specs. With a fence, steps belong to a rivers-worker or a step
    pod, which forward result JSON only: no pickled exceptions. With `tee`, a step's stdout and stderr also go
    to this process's own (a step pod's log, which its launcher attaches to a pod that died)."""
    global _fence_factory, _pickle_exceptions
    runtime.TEE_STREAMS = tee
    signing.use_key(key)
    _fence_factory = fence_factory
    _pickle_exceptions = fence_factory is None
    for name in ("code-repo.assets", "code-repo.tasks"):  # context.log records must reach the step's capture
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logs.step_log_level(log_level))


def serve(conn: Connection, key: bytes, log_level: int, fence_factory: FenceFactory | None) -> None:
    """The main loop of a pool process."""
    configure(key, log_level, fence_factory)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="rivers-parent-watch", daemon=True).start()
    try:
        while (message := _receive(conn)) is not None:
            ticket, spec_json = message
            conn.send(run_spec(spec_json, ticket))
    finally:  # the pool stops (or its owner is gone): resources set up here are torn down here
        teardown_rebuilt()


def _receive(conn: Connection) -> tuple[str, str] | None:
    try:
        message: tuple[str, str] | None = conn.recv()
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
            if _fence_factory is not None:
                _fence(call, _fence_factory(ticket, spec.step_key))
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
