"""A loky process pool with a narrow contract: `submit(ticket, spec JSON, reply)`; the reply gets result JSON.

    submit(ticket, spec_json, reply) ──> loky: run_spec(spec_json, ticket) in a pool process
                                              │ (its status file <pid> holds the ticket while the step runs)
    reply(ticket, StepResult JSON, pickled exception | None) <── done-callback (loky's manager thread)
        pool broken? the status files of dead pids name the ticket(s) that died with their process;
        every in-flight ticket of that pool is reported failed (infrastructure), named for what happened;
        the next submit starts a fresh pool. The pool never resubmits: the coordinator decides retries.

The pool reads nothing of a spec but, when it must report a failure itself, the step's identity
(`spec.read_header`). It never imports user code in the process that owns it.

We own our loky ProcessPoolExecutor instead of using `get_reusable_executor`: the reusable executor is
global, and other code (joblib, another library) may resize or shut it down under us.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loky import ProcessPoolExecutor
from loky.process_executor import BrokenProcessPool

from rivers import signing
from rivers.exceptions import WorkerLost
from rivers.executors.pool_process import FenceFactory, initialize, run_spec
from rivers.logs import log_level
from rivers.results import StepResult
from rivers.spec import read_header

STATUS_DIR_PREFIX = "rivers-parallel-"

Reply = Callable[[str, str, "bytes | None"], None]  # (ticket, StepResult JSON, pickled exception or None)


@dataclass(eq=False)
class _Job:
    ticket: str
    spec_json: str
    reply: Reply
    generation: int
    executor: ProcessPoolExecutor
    future: Future[Any] | None = None
    cancelled: bool = False


@dataclass
class _Verdict:
    """Why a pool generation broke: ticket -> message, for every ticket in flight there."""

    messages: dict[str, str] = field(default_factory=dict)
    interrupted: set[str] = field(default_factory=set)  # stopped with the pool: another ticket's process died


class ProcessPool:
    """Steps as spec JSON in a loky pool; a dead process fails its own step, the others are reported lost."""

    def __init__(self, max_workers: int, fence_factory: FenceFactory | None = None) -> None:
        self.max_workers = max_workers
        self.fence_factory = fence_factory
        self._lock = threading.RLock()
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._retired: set[int] = set()  # generations whose pool broke: the next submit starts a new pool
        self._verdicts: dict[int, _Verdict] = {}
        self._jobs: dict[str, _Job] = {}  # ticket -> in-flight job
        self._killed: set[str] = set()  # tickets whose process we killed on purpose
        self._status_dir = _status_directory()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._status_dir, True)

    def submit(self, ticket: str, spec_json: str, reply: Reply) -> None:
        """Run the step `spec_json` describes; `reply` is called exactly once, from another thread."""
        for _ in range(2):  # a pool may break between our check and loky's submit: then once more
            with self._lock:
                executor, generation = self._current_executor()
                job = _Job(ticket, spec_json, reply, generation, executor)
                self._jobs[ticket] = job
            try:
                job.future = executor.submit(run_spec, spec_json, ticket)
            except BrokenProcessPool:
                with self._lock:
                    self._jobs.pop(ticket, None)
                    self._retired.add(generation)
                continue
            job.future.add_done_callback(functools.partial(self._done, job))
            return
        self._fail(job, "the worker process pool could not be started")

    def cancel(self, ticket: str) -> None:
        """Withdraw a step that has not started; one that runs is left to finish, its reply dropped."""
        with self._lock:
            job = self._jobs.get(ticket)
        if job is not None:
            job.cancelled = True
            if job.future is not None:
                job.future.cancel()

    def kill(self, ticket: str) -> bool:
        """SIGKILL the process running `ticket` (an attempt that lost its lease); False if none runs it."""
        for pid, running in self._statuses().items():
            if running == ticket:
                with self._lock:
                    self._killed.add(ticket)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return True
        return False

    def _current_executor(self) -> tuple[ProcessPoolExecutor, int]:
        if self._executor is None or self._generation in self._retired:
            self._generation += 1
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, initializer=initialize,
                initargs=(signing.signing_key(), self._status_dir, log_level(), self.fence_factory),
            )
        return self._executor, self._generation

    # -- results (called on loky's manager thread) ------------------------------------------
    def _done(self, job: _Job, future: Future[Any]) -> None:
        if future.cancelled() or job.cancelled:
            with self._lock:
                self._jobs.pop(job.ticket, None)
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            with self._lock:
                verdict = self._verdicts.get(job.generation) or self._judge(job, exc)
            self._fail(job, verdict.messages.get(job.ticket) or f"worker process pool broke ({_first_line(exc)})",
                       interrupted=job.ticket in verdict.interrupted)
            return
        with self._lock:
            self._jobs.pop(job.ticket, None)
        if exc is not None:  # run_spec itself failed: not the step's doing
            self._fail(job, f"the worker process could not run the step: {_first_line(exc)}")
            return
        result_json, exc_bytes = future.result()
        job.reply(job.ticket, result_json, exc_bytes)

    def _fail(self, job: _Job, message: str, interrupted: bool = False) -> None:
        with self._lock:
            self._jobs.pop(job.ticket, None)
        header = read_header(job.spec_json)
        result = StepResult.failed(header.run_id, header.step_key, header.attempt, header.output_names,
                                   WorkerLost(message), infrastructure=True, interrupted=interrupted)
        job.reply(job.ticket, result.model_dump_json(), None)

    def _judge(self, first: _Job, exc: BaseException) -> _Verdict:
        """Decide once per broken generation what happened to each ticket that was in flight there.

        loky fails every pending future before it kills the surviving workers, so at this point
        only the processes that really died are gone; a ticket in the status file of one of them
        was running there. The others were stopped with the pool.
        """
        generation = first.generation
        verdict = self._verdicts[generation] = _Verdict()
        self._retired.add(generation)
        jobs = {ticket: job for ticket, job in self._jobs.items() if job.generation == generation}
        jobs[first.ticket] = first
        statuses = self._statuses()
        running = {ticket: pid for pid, ticket in statuses.items() if ticket in jobs}
        dead = _dead_pids(first.executor, set(statuses))
        for pid in dead:  # a dead process's file has told us what it knew
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._status_dir, str(pid)))
        codes = _exit_codes_in(str(exc))
        culprits = []
        for ticket, pid in running.items():
            if pid in dead:
                code = dead[pid] if dead[pid] is not None else (codes[0] if len(codes) == 1 else None)
                how = "was killed because its attempt lost its lease" if ticket in self._killed else \
                    f"{_describe_exit(code)}"
                step = read_header(jobs[ticket].spec_json).step_key
                verdict.messages[ticket] = f"worker process died: {how} while running '{step}'"
                culprits.append(step)
        self._killed.difference_update(jobs)
        cause = f"of '{culprits[0]}' died" if culprits else f"died ({_first_line(exc)})"
        for ticket in jobs:
            if ticket in verdict.messages:
                continue
            if culprits:  # known not to be its own doing; with no culprit, any of them may have died
                verdict.interrupted.add(ticket)
            verdict.messages[ticket] = (f"the worker process running '{read_header(jobs[ticket].spec_json).step_key}'"
                                        f" was stopped with its pool because a process {cause}")
        return verdict

    def _statuses(self) -> dict[int, str]:
        """pid -> ticket of the step it runs ("" between steps), for every pool process we know of."""
        statuses: dict[int, str] = {}
        for name in os.listdir(self._status_dir):
            try:
                with open(os.path.join(self._status_dir, name), "rb") as fh:
                    statuses[int(name)] = fh.read().decode(errors="replace").strip()
            except (FileNotFoundError, ValueError):
                continue
        return statuses

    # -- lifecycle ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._finalizer()

    def worker_pids(self) -> list[int]:
        """The pids of the current pool's processes (for tests and diagnostics)."""
        executor = self._executor
        return sorted(getattr(executor, "_processes", {}) or {}) if executor is not None else []


def _status_directory() -> str:
    """A fresh directory for status files, on tmpfs when there is one (cheap writes).

    Its name carries our pid, so that the directories of processes that were killed before they
    could clean up are removed by the next process that makes one.
    """
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    for name in os.listdir(parent):
        owner = name.split("-")[2] if name.startswith(STATUS_DIR_PREFIX) else ""
        if owner.isdigit() and int(owner) != os.getpid() and not _running(int(owner)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{STATUS_DIR_PREFIX}{os.getpid()}-", dir=parent)


def _dead_pids(executor: ProcessPoolExecutor | None, pids: set[int]) -> dict[int, int | None]:
    """pid -> exit code (None when unknown) of the given pool processes that are no longer running."""
    processes: dict[int, Any] = getattr(executor, "_processes", None) or {}
    dead: dict[int, int | None] = {}
    for pid in pids:
        process = processes.get(pid)
        if process is not None:
            code = process.exitcode  # polls (reaps) only a process that has ended
            if code is not None:
                dead[pid] = code
        elif not _running(pid):
            dead[pid] = None
    return dead


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _exit_codes_in(message: str) -> list[int]:
    """Exit codes from loky's message ('The exit codes of the workers are {SIGKILL(-9)}')."""
    return [int(code) for code in re.findall(r"\w+\((-?\d+)\)", message.rsplit("exit codes", 1)[-1])]


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by signal {-code} ({name})"
    return f"exited with code {code}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
