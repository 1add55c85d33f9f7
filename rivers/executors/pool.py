"""A pool of step processes with a narrow contract: `submit(ticket, spec JSON, reply)`, one step per process at a time.

    submit(ticket, spec_json, reply, route) ──> a free process's pipe gets (ticket, spec_json, route)
                                           │ (none free: a FIFO)
                                           │ pool process (pool_process.serve): run_spec -> result
                                           │ (with an AttemptOwner and a route, when it is the pool's only
                                           │ ticket: reported from there, marked so; else its owner reports it)
    reader thread: wait() on every process's pipe and sentinel
        a result ──> reply(ticket, PoolResult); the process takes the next waiting ticket, or runs the job
                     its own report claimed (PoolResult.next: the reply tells its owner, the slot keeps it)
        a death  ──> reply(ticket, WorkerLost naming the exit code or signal) for the ticket that process
                     ran, and no other; a fresh process takes its place

A process runs one ticket at a time and the pool knows which, so a death is attributed without guessing
and the other processes go on: a crash costs exactly its own step. The pool never resubmits: the
coordinator decides retries. It reads nothing of a spec but, when it must report a failure itself, the
step's identity (`spec.read_header`); it never imports user code in the process that owns it.

Processes are started with loky's process context (a clean spawn, cloudpickle-aware, resource tracking);
the dispatch is ours, because loky's executor breaks the whole pool when one process dies and hands each
task through two threads of the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from loky.backend.context import get_context

from rivers import signing
from rivers.exceptions import WorkerLost
from rivers.executors.pool_process import STEP_PROCESS_NAME, AttemptOwner, PoolResult, serve
from rivers.logs import log_level
from rivers.results import StepResult
from rivers.spec import read_header

MAX_START_FAILURES = 3  # processes in a row that die before finishing any step: the pool cannot start
SHUTDOWN_WAIT_S = 5.0


Reply = Callable[[str, PoolResult], None]  # (ticket, result), called once per submitted ticket


@dataclass(eq=False)
class _Task:
    ticket: str
    spec_json: str
    reply: Reply
    route: str | None = None  # where its step process reports it (with an AttemptOwner)
    cancelled: bool = False


@dataclass(eq=False)
class _Slot:
    process: Any  # a LokyProcess (loky's spawn)
    conn: Connection
    task: _Task | None = None
    finished: int = 0  # steps this process completed
    killed: bool = False  # we killed it on purpose (its attempt lost its lease)


@dataclass
class _State:
    slots: list[_Slot] = field(default_factory=list)
    waiting: deque[_Task] = field(default_factory=deque)
    start_failures: int = 0


class ProcessPool:
    """Steps as spec JSON in `max_workers` processes; a dead process fails its own step only."""

    def __init__(self, max_workers: int, owner: AttemptOwner | None = None,
                 on_start: Callable[[str], None] | None = None) -> None:
        self.max_workers = max_workers
        self.owner = owner  # a rivers-worker's leases: its processes fence output writes and report attempts
        self.on_start = on_start  # called with a ticket as a process gets its spec (with the pool's lock held)
        self._context = get_context("loky")
        self._lock = threading.Lock()
        self._state = _State()
        self._started = False
        self._closing = False
        self._wake_r, self._wake_w = self._context.Pipe(duplex=False)
        self._reader: threading.Thread | None = None

    # -- the contract ---------------------------------------------------------------------------
    def submit(self, ticket: str, spec_json: str, reply: Reply, route: str | None = None) -> None:
        """Run the step `spec_json` describes; `reply` is called exactly once, from another thread. With a
        `route` (and an owner), the step process reports the attempt there itself; its result says so."""
        task = _Task(ticket, spec_json, reply, route)
        with self._lock:
            if not self._started:
                self._start()
            if self._state.start_failures >= MAX_START_FAILURES:
                refused = True
            else:
                refused = False
                self._state.waiting.append(task)
                self._dispatch()
        if refused:
            self._fail(task, "the worker processes of this pool cannot start (each died before running a step)")

    def start(self) -> None:
        """Start the processes now rather than at the first submit (a worker warms its pool before it claims)."""
        with self._lock:
            if not self._started:
                self._start()

    def cancel(self, ticket: str) -> None:
        """Withdraw a step that has not started; one that runs is left to finish, its reply dropped."""
        with self._lock:
            for task in self._state.waiting:
                if task.ticket == ticket:
                    self._state.waiting.remove(task)
                    return
            for slot in self._state.slots:
                if slot.task is not None and slot.task.ticket == ticket:
                    slot.task.cancelled = True

    def kill(self, ticket: str) -> bool:
        """SIGKILL the process running `ticket` (an attempt that lost its lease); False if none runs it."""
        with self._lock:
            slot = next((s for s in self._state.slots if s.task is not None and s.task.ticket == ticket), None)
            if slot is None:
                return False
            slot.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGKILL)
        return True

    def worker_pids(self) -> list[int]:
        """The pids of the pool's processes (for tests and diagnostics)."""
        with self._lock:
            return sorted(slot.process.pid for slot in self._state.slots)

    def shutdown(self) -> None:
        with self._lock:
            self._closing = True
            slots = list(self._state.slots)
        for slot in slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        for slot in slots:
            slot.process.join(SHUTDOWN_WAIT_S)
            if slot.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGKILL)
                slot.process.join(SHUTDOWN_WAIT_S)
        self._wake()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(SHUTDOWN_WAIT_S)

    # -- processes ---------------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        for _ in range(self.max_workers):
            self._state.slots.append(self._new_slot())
        self._reader = threading.Thread(target=self._read_loop, name="rivers-pool-reader", daemon=True)
        self._reader.start()

    def _new_slot(self) -> _Slot:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=serve, name=STEP_PROCESS_NAME, daemon=True,
            args=(theirs, signing.signing_key(), log_level(), self.owner),
        )
        process.start()
        theirs.close()
        return _Slot(process, ours)

    def _dispatch(self) -> None:
        """Hand waiting tickets to free processes (called with the lock held)."""
        state = self._state
        for slot in state.slots:
            if not state.waiting:
                return
            if slot.task is None:
                task = state.waiting.popleft()
                slot.task = task
                # the process reports it itself when it is the pool's only step (one hop less for a downstream
                # step); with others running or waiting, its owner reports them in batches (throughput)
                alone = not state.waiting and all(other.task is None for other in state.slots if other is not slot)
                route = task.route if alone else None
                try:
                    slot.conn.send((task.ticket, task.spec_json, route))
                except (OSError, ValueError):  # the process is dying: the reader reports the ticket with it
                    continue
                if self.on_start is not None:
                    self.on_start(task.ticket)

    def _wake(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._wake_w.send_bytes(b"1")

    # -- the reader thread ----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                slots = list(self._state.slots)
            ready = wait([self._wake_r, *(s.conn for s in slots), *(s.process.sentinel for s in slots)])
            if self._wake_r in ready:
                with contextlib.suppress(OSError, EOFError):
                    self._wake_r.recv_bytes()
            for slot in slots:
                if slot.conn in ready or slot.process.sentinel in ready:
                    self._read(slot)

    def _read(self, slot: _Slot) -> None:
        try:
            payload = slot.conn.recv()
        except (EOFError, OSError):  # the process is gone
            self._died(slot)
            return
        following = payload.next if isinstance(payload, PoolResult) else None
        with self._lock:
            task = slot.task
            # a process whose report claimed a downstream job runs it now: the slot stays busy with that ticket
            slot.task = _Task(following.ticket, following.spec_json, task.reply, following.route) \
                if following is not None and task is not None else None
            slot.finished += 1
            self._state.start_failures = 0
            self._dispatch()
        if task is not None and not task.cancelled:
            task.reply(task.ticket, payload)
        if following is not None and self.on_start is not None:
            self.on_start(following.ticket)

    def _died(self, slot: _Slot) -> None:
        slot.process.join(SHUTDOWN_WAIT_S)
        with self._lock:
            if self._closing or slot not in self._state.slots:
                return
            task = slot.task
            index = self._state.slots.index(slot)
            if slot.finished == 0 and task is None:
                self._state.start_failures += 1
            if self._state.start_failures < MAX_START_FAILURES:
                self._state.slots[index] = self._new_slot()
            else:  # a broken environment: no more processes, the waiting steps fail
                del self._state.slots[index]
            if self._state.start_failures >= MAX_START_FAILURES:
                refused = list(self._state.waiting)
                self._state.waiting.clear()
            else:
                refused = []
                self._dispatch()
        slot.conn.close()
        if task is not None and not task.cancelled:
            step = read_header(task.spec_json).step_key
            how = "was killed because its attempt lost its lease" if slot.killed else _describe_exit(
                slot.process.exitcode)
            self._fail(task, f"worker process died: {how} while running '{step}'")
        for waiting in refused:
            self._fail(waiting, "the worker processes of this pool cannot start (each died before running a step)")

    def _fail(self, task: _Task, message: str) -> None:
        header = read_header(task.spec_json)
        result = StepResult.failed(header.run_id, header.step_key, header.attempt, header.output_names,
                                   WorkerLost(message), infrastructure=True)
        task.reply(task.ticket, PoolResult(result.model_dump_json(), f"WorkerLost: {message}"))


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
