"""The parallel executor: sync steps in a loky process pool, async steps on one event loop.

    coordinator ── put(request) ─┬─ sync ──> spec_from_call ─> JSON ─> pool.submit(run_spec, json, token)
                                 │                                          │ (worker process: status file
                                 │                                          │  <pid> holds the token while
                                 │                                          ▼  the step runs)
                                 │      done-callback (loky's manager thread) <── (StepResult JSON, exception)
                                 │        └─ pool broken? the status files of dead pids name the step(s) that
                                 │           died: those fail (infrastructure); the rest go to a fresh pool
                                 └─ async ─> event-loop thread: asyncio task, at most max_async_concurrent,
                                             runs run_step_async on the live StepCall
                  request.report(StepResult) <── both paths

One ParallelQueue per (max_workers, max_async_concurrent) serves every run of the process. We own
our loky ProcessPoolExecutor instead of using `get_reusable_executor`: the reusable executor is
global, and other code (joblib, another library) may resize or shut it down under us.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loky import ProcessPoolExecutor
from loky.process_executor import BrokenProcessPool

from rivers import signing
from rivers.definitions.executors import Parallel
from rivers.exceptions import ExecutionError, SpecError, WorkerLost
from rivers.executors.worker_side import failed_result, initialize, run_spec
from rivers.logs import log_level
from rivers.queues.base import StepRequest
from rivers.results import RemoteTraceback, StepResult
from rivers.runtime import StepCall, run_step_async
from rivers.spec import spec_from_call

STATUS_DIR_PREFIX = "rivers-parallel-"
MAX_UNEXPLAINED_BREAKS = 3  # pool breaks in a row that no status file explains before in-flight steps fail


def _failed(call: StepCall, exc: BaseException, *, infrastructure: bool = False) -> StepResult:
    return failed_result(call.run_id, call.step_key, call.attempt, [s.name for s in call.outputs], exc,
                         infrastructure=infrastructure)


@dataclass(eq=False)
class _Job:
    request: StepRequest
    spec_json: str
    token: str
    generation: int
    executor: ProcessPoolExecutor
    future: Future[Any] | None = None
    cancelled: bool = False


@dataclass
class _Verdict:
    """Who died when a pool generation broke: token -> message of the steps that were running there."""

    casualties: dict[str, str] = field(default_factory=dict)
    explained: bool = False


class ProcessPool:
    """Sync steps in a loky pool; a broken pool is replaced and only the dead process's step fails."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._lock = threading.RLock()
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._retired: set[int] = set()  # generations whose pool broke: the next submit starts a new pool
        self._verdicts: dict[int, _Verdict] = {}
        self._jobs: dict[str, _Job] = {}  # token -> in-flight job
        self._tokens = itertools.count()
        self._unexplained_breaks = 0
        self._status_dir = _status_directory()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._status_dir, True)

    def submit(self, request: StepRequest) -> None:
        try:
            spec_json = spec_from_call(request.call, "parallel").model_dump_json()
        except SpecError as exc:
            request.report(_failed(request.call, exc))
            return
        self._submit(request, spec_json)

    def submit_spec(self, request: StepRequest, spec_json: str) -> None:
        """Run a step that arrives already as spec JSON (a remote worker's job); reports like `submit`.

        `request` is only read for `step.key`, `call.run_id / step_key / attempt / outputs[].name`
        (to report a failure the step could not report itself) and `report`.
        """
        self._submit(request, spec_json)

    def _submit(self, request: StepRequest, spec_json: str) -> None:
        for _ in range(2):  # a pool may break between our check and loky's submit: then once more
            with self._lock:
                executor, generation = self._current_executor()
                job = _Job(request, spec_json, f"{generation}-{next(self._tokens)}", generation, executor)
                self._jobs[job.token] = job
            try:
                job.future = executor.submit(run_spec, spec_json, job.token)
            except BrokenProcessPool:
                with self._lock:
                    self._jobs.pop(job.token, None)
                    self._retired.add(generation)
                continue
            job.future.add_done_callback(functools.partial(self._done, job))
            return
        request.report(_failed(request.call, WorkerLost("the process pool could not be started"), infrastructure=True))

    def _current_executor(self) -> tuple[ProcessPoolExecutor, int]:
        if self._executor is None or self._generation in self._retired:
            self._generation += 1
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, initializer=initialize,
                initargs=(signing.signing_key(), self._status_dir, log_level()),
            )
        return self._executor, self._generation

    # -- results (called on loky's manager thread) ------------------------------------------
    def _done(self, job: _Job, future: Future[Any]) -> None:
        if future.cancelled() or job.cancelled:
            with self._lock:
                self._jobs.pop(job.token, None)
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            self._lost(job, exc)
            return
        with self._lock:
            self._jobs.pop(job.token, None)
            self._unexplained_breaks = 0
        if exc is not None:  # run_spec itself failed (an unreadable spec): not the step's doing
            job.request.report(_failed(job.request.call, exc))
            return
        job.request.report(_decode(future.result()))

    def _lost(self, job: _Job, exc: BaseException) -> None:
        """The pool broke while this job was in flight: fail it if it died with its process, else resubmit."""
        with self._lock:
            verdict = self._verdicts.get(job.generation) or self._judge(job, exc)
            self._jobs.pop(job.token, None)
            message = verdict.casualties.get(job.token)
        if message is None and verdict.explained:
            self._submit(job.request, job.spec_json)
            return
        if message is None:
            message = f"worker process died while running '{job.request.step.key}' ({_first_line(exc)})"
        job.request.report(_failed(job.request.call, WorkerLost(message), infrastructure=True))

    def _judge(self, first: _Job, exc: BaseException) -> _Verdict:
        """Decide once per broken generation which in-flight steps died with their process.

        loky fails every pending future before it kills the surviving workers, so at this point
        only the processes that really died are gone; a step whose token is in the status file of
        one of them was running there.
        """
        verdict = self._verdicts[first.generation] = _Verdict()
        self._retired.add(first.generation)
        statuses = self._statuses()
        running = {token: pid for pid, token in statuses.items() if token in self._jobs
                   and self._jobs[token].generation == first.generation}
        dead = _dead_pids(first.executor, set(statuses))
        for pid in dead:  # a dead process's file has told us what it knew
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._status_dir, str(pid)))
        codes = _exit_codes_in(str(exc))
        for token, pid in running.items():
            if pid in dead:
                code = dead[pid] if dead[pid] is not None else (codes[0] if len(codes) == 1 else None)
                job = self._jobs[token]
                verdict.casualties[token] = f"worker process died: {_describe_exit(code)} while running " \
                                            f"'{job.request.step.key}'"
        if verdict.casualties:
            self._unexplained_breaks = 0
            verdict.explained = True
        else:  # died between steps, or before it could run one: resubmit everything, a few times
            self._unexplained_breaks += 1
            verdict.explained = self._unexplained_breaks <= MAX_UNEXPLAINED_BREAKS
        return verdict

    def _statuses(self) -> dict[int, str]:
        """pid -> token of the step it runs ("" between steps), for every pool process we know of."""
        statuses: dict[int, str] = {}
        for name in os.listdir(self._status_dir):
            try:
                with open(os.path.join(self._status_dir, name), "rb") as fh:
                    statuses[int(name)] = fh.read().decode(errors="replace").strip()
            except (FileNotFoundError, ValueError):
                continue
        return statuses

    # -- lifecycle ---------------------------------------------------------------------------
    def cancel_run(self, run_id: str) -> None:
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.request.call.run_id == run_id]
        for job in jobs:
            job.cancelled = True
            if job.future is not None:
                job.future.cancel()

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


def _decode(payload: tuple[str, bytes | None]) -> StepResult:
    """A worker's StepResult, with its original exception (remote traceback as __cause__) when it pickled."""
    result_json, exc_bytes = payload
    result = StepResult.model_validate_json(result_json)
    if exc_bytes is not None and result.error is not None:
        try:
            exc = pickle.loads(exc_bytes)  # from our own pool processes only
        except Exception:  # noqa: BLE001 - coordinator.failure_exception rebuilds it from the StepError
            return result
        exc.__cause__ = RemoteTraceback(result.error.traceback)
        result.with_exception(exc)
    return result


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


class AsyncRunner:
    """Async steps as tasks on one event loop in a thread of its own, at most `limit` at once."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    def submit(self, request: StepRequest) -> None:
        self._ensure_loop().call_soon_threadsafe(self._start, request)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="rivers-async-steps", daemon=True).start()
                self._loop = loop
            return self._loop

    def _start(self, request: StepRequest) -> None:
        if self.limit is not None and self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        task = asyncio.get_running_loop().create_task(self._run(request))
        tasks = self._tasks.setdefault(request.call.run_id, set())
        tasks.add(task)
        task.add_done_callback(lambda t: self._forget(request.call.run_id, t))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(run_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[run_id]

    async def _run(self, request: StepRequest) -> None:
        # In this process, an async step runs on the live objects, like any step that stays here (API §5).
        async with self._semaphore or contextlib.nullcontext():
            try:
                result = await run_step_async(request.call)
            except asyncio.CancelledError:
                return
            except SystemExit as exc:  # raised on, it would end the loop's thread and strand every async step
                stopped = ExecutionError(f"'{request.call.step_key}' called sys.exit({exc.code!r}) in an async step")
                result = _failed(request.call, stopped)
            except BaseException as exc:  # noqa: BLE001 - run_step_async reports user errors itself; see above
                result = _failed(request.call, exc)
        request.report(result)

    def cancel_run(self, run_id: str) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks.get(run_id, ()))])

    def shutdown(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


class ParallelQueue:
    """The `parallel` StepQueue of this process: a process pool and an event loop, shared by every run."""

    executor = "parallel"

    def __init__(self, max_workers: int, max_async_concurrent: int | None) -> None:
        self.pool = ProcessPool(max_workers)
        self.async_steps = AsyncRunner(max_async_concurrent)

    def put(self, request: StepRequest) -> None:
        if request.step.is_async:
            self.async_steps.submit(request)
        else:
            self.pool.submit(request)

    def cancel_run(self, run_id: str) -> None:
        self.pool.cancel_run(run_id)
        self.async_steps.cancel_run(run_id)

    def shutdown(self) -> None:
        self.pool.shutdown()
        self.async_steps.shutdown()


_queues: dict[tuple[int, int | None], ParallelQueue] = {}
_queues_lock = threading.Lock()


def parallel_queue(executor: Parallel) -> ParallelQueue:
    """The process-wide queue for these settings, made on first use and reused by later runs."""
    key = (executor.max_workers, executor.max_async_concurrent)
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = ParallelQueue(*key)
        return queue


def shutdown_parallel_queues() -> None:
    """Stop every pool and loop of this process (worker processes tear their resources down)."""
    with _queues_lock:
        queues = list(_queues.values())
        _queues.clear()
    for queue in queues:
        queue.shutdown()
