"""What runs inside a pool process: rebuild the step from its spec, run it, send the result back.

Each pool process keeps a status file named after its pid, holding the token of the step it is
running (blank between steps): two small writes per step. If the process dies, the file still names
the step it was running; that is how the pool's owner learns which step died with it (parallel.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterable

import cloudpickle

from rivers import signing
from rivers.exceptions import ExecutionError, SpecError
from rivers.results import LogEntry, OutputResult, StepError, StepResult
from rivers.runtime import run_step
from rivers.spec import StepSpec, call_from_spec

STATUS_WIDTH = 64  # bytes of a status file: a token, space-padded (tokens are shorter)
_status_fd: int | None = None


def initialize(key: bytes, status_dir: str, log_level: int) -> None:
    """The loky initializer of every pool process."""
    global _status_fd
    signing.use_key(key)
    _status_fd = os.open(os.path.join(status_dir, str(os.getpid())), os.O_RDWR | os.O_CREAT, 0o600)
    for name in ("rivers.assets", "rivers.tasks"):  # context.log records must reach the step's capture
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(log_level)


def run_spec(spec_json: str, token: str) -> tuple[str, bytes | None]:
    """Run one step: (StepResult JSON, the pickled exception of a failure or None)."""
    _set_status(token)
    try:
        result = _run(StepSpec.model_validate_json(spec_json))
        return result.model_dump_json(), _pickled_exception(result.exception)
    finally:
        _set_status("")


def _set_status(token: str) -> None:
    if _status_fd is not None:  # one small pwrite; a torn read could only fail to name a step (resubmitted)
        os.pwrite(_status_fd, token.encode()[:STATUS_WIDTH].ljust(STATUS_WIDTH), 0)


def _run(spec: StepSpec) -> StepResult:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            result = run_step(call_from_spec(spec))
        except SpecError as exc:
            result = failed_result(spec.run_id, spec.step_key, spec.attempt, [o.name for o in spec.outputs], exc)
        except SystemExit as exc:  # the user's code asked to exit: that ends the step, not the pool process
            stopped = ExecutionError(f"'{spec.step_key}' called sys.exit({exc.code!r}) in a worker process")
            result = failed_result(spec.run_id, spec.step_key, spec.attempt, [o.name for o in spec.outputs],
                                   stopped)
    now = time.time()
    for stream, level, text in (("stdout", "INFO", stdout.getvalue()), ("stderr", "WARNING", stderr.getvalue())):
        result.logs.extend(LogEntry(logger=stream, level=level, message=line, created=now)
                           for line in text.splitlines())
    return result


def failed_result(
    run_id: str, step_key: str, attempt: int, outputs: Iterable[str], exc: BaseException, *,
    infrastructure: bool = False,
) -> StepResult:
    """The report of an attempt that failed before (or outside) the step runtime."""
    error = StepError.from_exception(exc, infrastructure=infrastructure)
    return StepResult(
        run_id=run_id, step_key=step_key, attempt=attempt, status="failed",
        outputs=[OutputResult(name=name, status="failed", error=error) for name in outputs],
        error=error, pid=os.getpid(),
    ).with_exception(exc)


def _pickled_exception(exc: BaseException | None) -> bytes | None:
    """The exception for the coordinator to re-raise with its own type, if it pickles."""
    if exc is None:
        return None
    try:
        return cloudpickle.dumps(exc)
    except (Exception, SystemExit):  # noqa: BLE001 - the coordinator rebuilds the type from the StepError instead
        return None
