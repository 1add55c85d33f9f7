"""The parallel executor: sync steps in a loky process pool, async steps on one event loop.

    coordinator ── put(request) ─┬─ sync ──> spec_from_call ─> JSON ─> pool.submit(ticket, json, reply)
                                 │                                          │ (pool.py: a process per step
                                 │                                          ▼  at a time; death -> one step)
                                 │           reply(ticket, PoolResult: result JSON, exception) ─┐
                                 └─ async ─> event-loop thread: asyncio task, at most            │
                                             max_async_concurrent, runs run_step_async on the     │
                                             live StepCall                                        │
                  request.report(StepResult) <────────────────────────────────────────────────────┘

One ParallelQueue per (max_workers, max_async_concurrent) serves every run of the process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import pickle
import threading
from functools import partial

from rivers.definitions.executors import Parallel
from rivers.exceptions import ExecutionError, SpecError
from rivers.executors.pool import PoolResult, ProcessPool
from rivers.queues.base import StepRequest
from rivers.results import RemoteTraceback, StepResult
from rivers.runtime import StepCall, run_step_async
from rivers.spec import Prepared, spec_json_of


def _failed(call: StepCall, exc: BaseException) -> StepResult:
    return StepResult.failed(call.run_id, call.step_key, call.attempt, [s.name for s in call.outputs], exc)


def _decode(result_json: str, exc_bytes: bytes | None) -> StepResult:
    """A pool process's StepResult, with its original exception (remote traceback as __cause__) when it pickled."""
    result = StepResult.model_validate_json(result_json)
    if exc_bytes is not None and result.error is not None:
        try:
            exc = pickle.loads(exc_bytes)  # from our own pool processes only
        except Exception:  # noqa: BLE001 - coordinator.failure_exception rebuilds it from the StepError
            return result
        exc.__cause__ = RemoteTraceback(result.error.traceback)
        result.with_exception(exc)
    return result


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
        self._lock = threading.Lock()
        self._requests: dict[str, StepRequest] = {}  # ticket -> request in the pool
        self._tickets = itertools.count()
        self._specs = Prepared(partial(spec_json_of, executor="parallel"))

    def prepare(self, call: StepCall) -> None:
        if not call.definition.is_async or call.members:
            self._specs.prepare(call)

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return False  # results come back through this process: it hands the step on itself

    def disarm(self, call: StepCall) -> None:
        """Nothing is ever armed."""

    def put(self, request: StepRequest) -> None:
        if request.step.is_async:
            self.async_steps.submit(request)
            return
        try:
            spec_json = self._specs.take(request.call)
        except SpecError as exc:
            request.report(_failed(request.call, exc))
            return
        ticket = str(next(self._tickets))
        with self._lock:
            self._requests[ticket] = request
        self.pool.submit(ticket, spec_json, self._reply)

    def _reply(self, ticket: str, result: PoolResult) -> None:
        with self._lock:
            request = self._requests.pop(ticket, None)
        if request is not None:
            request.report(_decode(result.result_json, result.exception))

    def flush(self) -> None:
        """Nothing to do: a put reaches the pool at once."""

    def cancel_run(self, run_id: str) -> None:
        with self._lock:
            tickets = [t for t, r in self._requests.items() if r.call.run_id == run_id]
            for ticket in tickets:
                del self._requests[ticket]
        for ticket in tickets:
            self.pool.cancel(ticket)
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
        if not _queues:  # at exit the pools stop cleanly: their processes tear down the resources they set up
            atexit.register(shutdown_parallel_queues)
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
