"""The coordinator runs one plan to its RunResult.

    plan ──> RunState.initial_ready()
              │
              ▼  dispatch(step)
     ┌─ in_process ─> local deque ──> run_step() inline, in this thread
     ├─ parallel ───> StepQueue.put(request) ─┐   (loky pool / Redis / pods)
     └─ kubernetes ─> StepQueue.put(request) ─┤
                                              ▼
            inbox (thread-safe) <── request.report(StepResult) from any thread
              │
              ▼  settle(result): retry? -> timer heap;  final -> RunState.finish()
         newly ready steps are dispatched at once: there is no level barrier.

Only this module decides retry, skip or fail; consumers just take, run and report.
"""

from __future__ import annotations

import asyncio
import heapq
import importlib
import queue
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from rivers import defaults
from rivers.coordinator.state import RunState
from rivers.definitions.policies import RetryPolicy
from rivers.exceptions import ExecutionError
from rivers.logs import get_logger
from rivers.plan import Plan, Step
from rivers.queues.base import StepQueue, StepRequest
from rivers.results import RunResult, StepError, StepResult
from rivers.runtime import StepCall, run_step, run_step_async

RunListener = Callable[[str, Step, StepResult | None], None]  # (event, step, result)


class Coordinator:
    """Owns one run: dispatches ready steps, settles their results, builds the RunResult."""

    def __init__(
        self,
        run_id: str,
        plan: Plan,
        queues: Mapping[str, StepQueue],
        resources: Mapping[str, BaseModel],
        step_config: Mapping[str, dict[str, Any]],
        retry: RetryPolicy | None = None,
        listener: RunListener | None = None,
    ) -> None:
        self.run_id = run_id
        self.plan = plan
        self.queues = queues
        self.resources = resources
        self.step_config = step_config
        self.retry = retry
        self.listener = listener
        self.state = RunState(plan)
        self.inbox: queue.SimpleQueue[StepResult] = queue.SimpleQueue()
        self.local: deque[StepRequest] = deque()
        self.timers: list[tuple[float, int, Step]] = []
        self.in_flight = 0
        self.log = get_logger().bind(run_id=run_id)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the loop ---------------------------------------------------------------------------
    def execute(self) -> RunResult:
        if self.plan.moved:
            self.log.warning(
                "steps.moved_to_coordinator", steps=self.plan.moved,
                reason="they read or write a process-local IO handler (InMemoryIOHandler)",
            )
        try:
            self._dispatch_all(self.state.initial_ready())
            while self._has_work():
                self._drain_inbox()
                if self.local:
                    self._run_local(self.local.popleft())
                    continue
                self._release_due_timers()
                if self.in_flight:
                    self._wait_for_result()
                elif self.timers:
                    time.sleep(max(0.0, self.timers[0][0] - time.monotonic()))
        finally:
            if self._loop is not None:
                self._loop.close()
        return self._run_result()

    def _has_work(self) -> bool:
        return bool(self.local or self.in_flight or self.timers)

    def _drain_inbox(self) -> None:
        while True:
            try:
                result = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.in_flight -= 1
            self._settle(result)

    def _wait_for_result(self) -> None:
        timeout = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None
        try:
            result = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self.in_flight -= 1
        self._settle(result)

    def _release_due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, step = heapq.heappop(self.timers)
            self._dispatch(step)

    # -- dispatch ---------------------------------------------------------------------------
    def _dispatch_all(self, steps: list[Step]) -> None:
        for step in steps:
            self._dispatch(step)

    def _dispatch(self, step: Step) -> None:
        attempt = self.state.start(step)
        request = StepRequest(step, self._call(step, attempt), self.inbox.put)
        self.log.debug("step.queued", step_key=step.key, executor=step.executor, attempt=attempt)
        if step.executor == "in_process":
            self.local.append(request)
            return
        self.in_flight += 1
        self._notify("started", step, None)
        self.log.info("step.started", step_key=step.key, executor=step.executor, attempt=attempt)
        self.queues[step.executor].put(request)

    def _call(self, step: Step, attempt: int) -> StepCall:
        node = step.node
        outputs = [node.outputs[name] for name in step.outputs]
        return StepCall(
            run_id=self.run_id, step_key=step.key, attempt=attempt, definition=node.definition,
            params=node.params, outputs=outputs, resources=self.resources, context_type=node.context_type,
            config_type=node.config_type, config=self.step_config.get(step.key), return_hint=node.return_hint,
        )

    def _run_local(self, request: StepRequest) -> None:
        step = request.step
        self._notify("started", step, None)
        self.log.info("step.started", step_key=step.key, executor="in_process", attempt=request.call.attempt)
        if step.is_async:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(run_step_async(request.call))
        else:
            result = run_step(request.call)
        self._settle(result)

    # -- results ----------------------------------------------------------------------------
    def _settle(self, result: StepResult) -> None:
        step = self.plan.steps[result.step_key]
        if result.status == "failed" and self._should_retry(step, result):
            policy = step.node.retry or self.retry
            delay = policy.delay(result.attempt) if policy else 0.0
            self.log.warning("step.retrying", step_key=step.key, executor=step.executor, attempt=result.attempt,
                             delay_s=delay, error=result.error.summary() if result.error else None)
            heapq.heappush(self.timers, (time.monotonic() + delay, id(result), step))
            return
        event = "step.succeeded" if result.status == "succeeded" else "step.failed"
        fields: dict[str, Any] = {"step_key": step.key, "executor": step.executor, "attempt": result.attempt,
                                  "duration_s": round(result.duration_s, 6)}
        if result.error is not None:
            fields["error"] = result.error.summary()
        (self.log.info if result.status == "succeeded" else self.log.error)(event, **fields)
        ready, skipped = self.state.finish(result)
        self._notify(result.status, step, result)
        for key in skipped:
            self.log.warning("step.skipped", step_key=key, executor=self.plan.steps[key].executor,
                             reason="upstream dependency failed")
            self._notify("skipped", self.plan.steps[key], None)
        self._dispatch_all(ready)

    def _should_retry(self, step: Step, result: StepResult) -> bool:
        policy = step.node.retry or self.retry
        error = result.error
        if policy is None:
            return error is not None and error.infrastructure and result.attempt <= defaults.INFRA_RETRIES
        if result.attempt > policy.max_retries:
            return False
        return policy.retries(exception_type(result))

    def _notify(self, event: str, step: Step, result: StepResult | None) -> None:
        if self.listener is not None:
            self.listener(event, step, result)

    def _run_result(self) -> RunResult:
        failed = self.state.failed_assets()
        return RunResult(
            success=not failed, run_id=self.run_id, materialized_assets=self.state.materialized_assets(),
            failed_assets=failed, step_results=dict(self.state.results),
        )

    def first_exception(self) -> BaseException | None:
        """The first final failure's exception, rebuilt when it happened in another process."""
        if not self.state.failures:
            return None
        return failure_exception(self.state.failures[0])


def exception_type(result: StepResult) -> type[BaseException] | None:
    if result.exception is not None:
        return type(result.exception)
    if result.error is None:
        return None
    return _import_exception_class(result.error)


def _import_exception_class(error: StepError) -> type[BaseException] | None:
    try:
        found: Any = importlib.import_module(error.module)
        for part in error.type.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def failure_exception(result: StepResult) -> BaseException:
    """The original exception of a failed step, or one of the same type rebuilt from its report."""
    if result.exception is not None:
        return result.exception
    error = result.error
    assert error is not None
    cls = _import_exception_class(error)
    try:
        exc = cls(error.message) if cls is not None else ExecutionError(error.summary())
    except Exception:  # noqa: BLE001 - a class whose constructor wants other arguments
        exc = ExecutionError(error.summary())
    exc.__cause__ = RemoteTraceback(error.traceback)
    return exc


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""
