"""The coordinator runs one plan to its RunResult: dispatch, wait, settle. RunState decides; this acts.

    plan ──> RunState.begin() ──> dispatch(step): RunState.admit -> attempt
              │
     ┌─ in_process ─> StepQueue.put(request) ─┐   (sync: run by this thread in run_next; async: an event loop)
     ├─ parallel ───> StepQueue.put(request) ─┤   (process pool / Redis / pods)
     └─ kubernetes ─> StepQueue.put(request) ─┤
                                              ▼
            request.report(StepResult) from any thread
              │  the loop only waits? that thread drives: it settles and dispatches (no thread switch between a
              │  result and its downstream leaving), then wakes the loop; else the result goes to the inbox
              ▼  RunState.settle(result): a retry (timer) | final results, steps now ready or skipped
         newly ready steps are dispatched at once: there is no level barrier; due timers are dispatched again.
         while it would only wait, the steps one upstream away get their call built and their queue prepares
         (a Redis queue builds the whole job): a step's downstream leaves without waiting for that. A step whose
         last missing input comes from one running Redis step is armed on it: its job waits in Redis and that
         step's successful report enqueues it there (queues/armed.py); its dispatch then only confirms it.

Consumers only take, run and report; whether a failure is retried, skipped past or final is RunState's call.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from pydantic import BaseModel

from rivers.coordinator.state import RunState, exception_type, imported_exception_class
from rivers.definitions.executors import Executor, Kubernetes
from rivers.definitions.graph import CollectNode
from rivers.definitions.policies import HookContext
from rivers.exceptions import ExecutionError, FencedOut
from rivers.executors.in_process import InProcessQueue
from rivers.io.base import InputContext
from rivers.kubernetes.pod_request import PodRequest, pod_request
from rivers.logs import get_logger
from rivers.plan import Plan, Step
from rivers.queues.base import StepQueue, StepRequest
from rivers.resolve import ResolvedNode
from rivers.results import RemoteTraceback, RunResult, StepResult
from rivers.runtime import StepCall, fan_out_keys, fire_hooks

RunListener = Callable[[str, Step, StepResult | None], None]  # (event, step, result)

__all__ = ["Coordinator", "RunListener", "exception_type", "failure_exception"]


@dataclasses.dataclass(frozen=True, slots=True)
class Running:
    """In the inbox: a process started this attempt (until then it was queued)."""

    step_key: str
    attempt: int


@dataclasses.dataclass(frozen=True, slots=True)
class Drove:
    """In the inbox: a reporting thread settled a result and dispatched what it made ready (or failed doing so)."""

    error: BaseException | None = None


Inbox = StepResult | Running | Drove | None  # None: stand down


class Coordinator:
    """Owns one run: dispatches ready steps, settles their results, builds the RunResult."""

    def __init__(
        self,
        run_id: str,
        plan: Plan,
        queues: Mapping[str, StepQueue],
        resources: Mapping[str, BaseModel],
        step_config: Mapping[str, dict[str, Any]],
        listener: RunListener | None = None,
        seed: Mapping[str, StepResult] | None = None,
        executor_limits: Mapping[str, int] | None = None,
        pods: Kubernetes | None = None,
    ) -> None:
        self.run_id = run_id
        self.plan = plan
        self.in_process = InProcessQueue(self._started_now)
        self.queues: Mapping[str, StepQueue] = {**queues, "in_process": self.in_process}
        self.resources = resources
        self.step_config = step_config
        self.listener = listener
        self.pods = pods or Executor.kubernetes()  # what kubernetes steps' pods get, before Compute and escalation
        self.state = RunState(plan, seed, executor_limits)
        self.inbox: queue.SimpleQueue[Inbox] = queue.SimpleQueue()
        self._driving = threading.Lock()  # held by whoever drives the run: the loop, or a reporting thread
        self._waiting = False  # the loop only waits: a reporting thread may drive
        self._nudged = False  # a Drove is in the inbox: the loop will look at everything driven meanwhile
        self.in_flight = 0
        self._told: list[tuple[str, Step, StepResult | None]] = []  # events not yet given to the listener
        self._ahead: deque[Step] = deque()  # downstream of dispatched steps: prepared while the coordinator waits
        self._armed: dict[str, list[tuple[Step, int]]] = {}  # step -> (step, attempt) armed on its running attempt
        self._producer = {out: key for key, step in plan.steps.items() for out in step.outputs}
        self.log = get_logger().bind(run_id=run_id)

    # -- the loop ---------------------------------------------------------------------------
    def execute(self) -> RunResult:
        if self.plan.moved:
            self.log.warning(
                "steps.moved_to_coordinator", steps=self.plan.moved,
                reason="they read or write a process-local IO handler (InMemoryIOHandler)",
            )
        if self.listener is not None:
            for step in self.plan.steps.values():
                self.listener("planned", step, None)
        self._driving.acquire()
        try:
            self._dispatch_all(self.state.begin())
            while self._has_work():
                self._drain_inbox()
                self._send_due()
                self._tell()  # only now: a listener's writes (run history in Redis) are not on the hand-off path
                if self.in_process.run_next():
                    continue
                due = self.state.next_due()
                if self.in_flight:
                    self._prepare_ahead()
                    self._wait_for_result(due)
                elif due is not None:
                    time.sleep(max(0.0, due - time.monotonic()))
        finally:
            self._driving.release()
            self.in_process.shutdown()
        self._tell()
        self._fire_graph_hooks()
        return self._run_result()

    def _fire_graph_hooks(self) -> None:
        """A graph asset's hooks fire once per run: failure if any internal task failed, else success."""
        graphs: dict[str, Any] = {}
        for step in self.plan.steps.values():
            graph = getattr(step.node.definition, "graph", None)
            if graph is not None and graph.hooks:
                graphs.setdefault(graph.name, graph)
        for name, graph in graphs.items():
            members = [s for s in self.plan.steps.values() if getattr(s.node.definition, "graph", None) is graph]
            failed = [self.state.results[s.key] for s in members if self.state.status[s.key] == "failed"]
            if not failed and any(self.state.status[s.key] != "succeeded" for s in members):
                continue  # skipped because of a failure upstream of the graph: no outcome of its own
            output = None
            if not failed and name in self.state.output_status:
                final = next(s for s in members if name in s.node.outputs)
                slot = final.node.outputs[name]
                output = slot.handler.load_input(InputContext(name, None, slot.metadata))
            error = failure_exception(failed[0]) if failed else None
            fire_hooks(graph.hooks, HookContext(name, self.run_id, output, error, {}, None))

    def _has_work(self) -> bool:
        return bool(self.in_flight or self.state.timers)

    def stand_down(self) -> None:
        """Stop driving this run at once (another coordinator owns it now); `execute` raises FencedOut."""
        self.inbox.put(None)

    def _drain_inbox(self) -> None:
        while True:
            try:
                result = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._take(result)

    def _take(self, result: Inbox) -> None:
        if result is None:
            raise FencedOut(f"run {self.run_id} is owned by another coordinator now")
        if isinstance(result, Drove):
            self._nudged = False
            if result.error is not None:
                raise result.error
            return
        if isinstance(result, Running):
            if self.state.status.get(result.step_key) == "running" and \
                    self.state.attempts.get(result.step_key) == result.attempt:  # not an attempt that ended
                self._notify("running", self.plan.steps[result.step_key], None)
            return
        self.in_flight -= 1
        self._settle(result)

    def _wait_for_result(self, due: float | None) -> None:
        timeout = max(0.0, due - time.monotonic()) if due is not None else None
        self._waiting = True
        self._driving.release()
        try:
            result = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        finally:
            self._driving.acquire()
            self._waiting = False
        self._take(result)

    def _report(self, result: StepResult) -> None:
        """A step's result, from any thread. While the loop only waits, this thread settles it and dispatches what
        it made ready at once (a thread switch less between a step's end and its downstream leaving), then wakes
        the loop; otherwise (the loop is busy, or already woken for such a result) the loop takes it from the
        inbox: a burst of results is settled in one go, as before."""
        if self._waiting and not self._nudged and self._driving.acquire(blocking=False):
            try:
                if self._waiting and not self._nudged:
                    self._take(result)
                    self._send_due()
                    self._nudged = True  # the loop wakes up; results that come meanwhile wait for it in the inbox
                    self.inbox.put(Drove())
                    return
            except BaseException as exc:  # noqa: BLE001 - raised in the loop's thread, as if it had settled this
                self.inbox.put(Drove(exc))
                return
            finally:
                self._driving.release()
        self.inbox.put(result)

    # -- dispatch ---------------------------------------------------------------------------
    def _send_due(self) -> None:
        """Dispatch the retries whose backoff has passed; then what was dispatched leaves before anything waits."""
        self._dispatch_all(self.state.due(time.monotonic()))
        for step_queue in self.queues.values():
            step_queue.flush()

    def _dispatch_all(self, steps: list[Step]) -> None:
        for step in steps:
            self._dispatch(step)

    def _dispatch(self, step: Step) -> None:
        if step.fan_out_source is not None:
            self._expand(step)
            return
        attempt = self.state.admit(step)
        if attempt is None:
            return  # an instance waiting for its turn under max_concurrency
        call = self._call(step, attempt)
        if step.executor == "kubernetes":
            call.pod = self._pod_request(step)
        request = StepRequest(step, call, self._report, partial(self.inbox.put, Running(step.key, attempt)))
        self.log.debug("step.queued", step_key=step.key, executor=step.executor, attempt=attempt)
        self.in_flight += 1
        if step.executor != "in_process":  # an in-process sync step starts when it runs (run_next)
            self._started(request)
        self.queues[step.executor].put(request)
        for output in step.outputs:
            self._ahead.extend(self.plan.steps[key] for key in self.plan.consumers.get(output, ()))

    def _prepare_ahead(self) -> None:
        """Until a result arrives: build the first attempt of steps one upstream away, and let their queue
        prepare it (a Redis queue builds the job then, not on the way from a result to its downstream), or arm
        it on the one running attempt it still waits for."""
        while self._ahead and self.inbox.empty():
            step = self._ahead.popleft()
            if self.state.status[step.key] != "pending" or step.live or step.executor == "kubernetes" or \
                    step.fan_out_source is not None or isinstance(step.node.definition, CollectNode):
                continue  # started, or what its dispatch builds depends on what happens until then
            attempt = self.state.attempts[step.key] + 1
            call = self._call(step, attempt)
            upstream = self._armable_on(step)
            if upstream is not None and self.queues[step.executor].arm(call, (upstream, self.state.attempts[upstream])):
                self._armed.setdefault(upstream, []).append((step, attempt))
            else:
                self.queues[step.executor].prepare(call)

    def _armable_on(self, step: Step) -> str | None:
        """The one running step whose success alone makes `step` ready and admitted at once, if there is one: a
        step not throttled, whose other inputs all succeeded, waiting for a Redis step that reports itself."""
        if step.instance_of is not None or step.executor in self.state.executor_throttles:
            return None
        missing = {self._producer[out] for out in step.needs if self.state.output_status.get(out) != "succeeded"}
        if len(missing) != 1:
            return None
        upstream = self.plan.steps[missing.pop()]
        if self.state.status[upstream.key] != "running" or upstream.live or upstream.executor == "kubernetes" or \
                upstream.fan_out_source is not None:
            return None
        return upstream.key

    def _disarm_left(self, step_key: str) -> None:
        """`step_key`'s attempt ended: what was armed on it and not dispatched now (a retry, a skip) is taken back."""
        for armed, attempt in self._armed.pop(step_key, ()):
            if self.state.status[armed.key] != "running" or self.state.attempts[armed.key] != attempt:
                self.queues[armed.executor].disarm(self._call(armed, attempt))

    def _pod_request(self, step: Step) -> PodRequest:
        """The next attempt's pod: the executor's, per axis the node's Compute, escalated after out-of-memory."""
        escalation = step.retry.escalate if step.retry is not None else None
        return pod_request(self.pods, getattr(step.node.definition, "compute", None), escalation,
                           self.state.reasons.get(step.key, ()))

    def _started_now(self, request: StepRequest) -> None:
        """An in-process step is about to run in this thread: its event cannot wait for the next flush."""
        self._started(request)
        self._tell()

    def _started(self, request: StepRequest) -> None:
        self._notify("started", request.step, None)
        self.log.info("step.started", step_key=request.step.key, executor=request.step.executor,
                      attempt=request.call.attempt)

    # -- fan-out ----------------------------------------------------------------------------
    def _expand(self, mapped: Step) -> None:
        """A mapped step never runs: it becomes one instance step per item of its source."""
        try:
            keys = self.state.source_keys(mapped)
            if keys is None:  # the source was not produced in this run: read it through its handler
                item_param = next(p for p in mapped.node.params if p.kind == "item")
                assert item_param.handler is not None and mapped.fan_out_source is not None
                value = item_param.handler.load_input(InputContext(mapped.fan_out_source, mapped.key,
                                                                   item_param.metadata))
                keys = fan_out_keys(mapped.fan_out_source, value)
        except Exception as exc:  # noqa: BLE001 - the mapped step fails, its downstream is skipped
            self.state.start(mapped)
            self._settle(StepResult.failed(self.run_id, mapped.key, 1, mapped.outputs, exc))
            return
        to_run, done = self.state.expand(mapped, keys, getattr(mapped.node.definition, "max_concurrency", None))
        self.log.info("step.fanned_out", step_key=mapped.key, instances=len(keys))
        if done is not None:
            self._settle(done.model_copy(update={"run_id": self.run_id}))
        self._dispatch_all(to_run)

    def _call(self, step: Step, attempt: int) -> StepCall:
        node = step.node
        if step.instance_of is not None:
            return self._instance_call(step, attempt)
        if node.members:
            return StepCall(
                run_id=self.run_id, step_key=step.key, attempt=attempt, definition=node.definition, params=[],
                outputs=[node.outputs[name] for name in step.outputs], resources=self.resources,
                members=[self._member_call(member, attempt) for member in node.members],
            )
        outputs = [node.outputs[name] for name in step.outputs]
        params = node.params
        definition = node.definition
        if isinstance(definition, CollectNode):
            order = self.state.completed if definition.stream and not definition.ordered else self.state.instances
            params = [dataclasses.replace(p, value=list(order.get(definition.mapped, []))) for p in params]
        return StepCall(
            run_id=self.run_id, step_key=step.key, attempt=attempt, definition=definition,
            params=params, outputs=outputs, resources=self.resources, context_type=node.context_type,
            config_type=node.config_type, config=self.step_config.get(step.key), return_hint=node.return_hint,
            retry=step.retry,
        )

    def _member_call(self, node: ResolvedNode, attempt: int) -> StepCall:
        return StepCall(
            run_id=self.run_id, step_key=node.name, attempt=attempt, definition=node.definition,
            params=node.params, outputs=list(node.outputs.values()), resources=self.resources,
            context_type=node.context_type, config_type=node.config_type, config=self.step_config.get(node.name),
            return_hint=node.return_hint,
        )

    def _instance_call(self, step: Step, attempt: int) -> StepCall:
        """An instance writes `<mapped>__<key>` through the mapped task's handler and gets item `index`."""
        node = step.node
        mapped_slot = node.outputs[step.instance_of]  # type: ignore[index]
        outputs = [dataclasses.replace(mapped_slot, name=step.key)]
        params = [dataclasses.replace(p, value=step.index) if p.kind == "item" else p for p in node.params]
        config = self.step_config.get(step.key) or self.step_config.get(step.instance_of)  # type: ignore[arg-type]
        return StepCall(
            run_id=self.run_id, step_key=step.key, attempt=attempt, definition=node.definition, params=params,
            outputs=outputs, resources=self.resources, context_type=node.context_type,
            config_type=node.config_type, config=config, return_hint=node.return_hint,
            retry=step.retry,
        )

    # -- results ----------------------------------------------------------------------------
    def _settle(self, result: StepResult) -> None:
        try:
            self._settle_result(result)
        finally:
            if self._armed:
                self._disarm_left(result.step_key)

    def _settle_result(self, result: StepResult) -> None:
        settled = self.state.settle(result, time.monotonic())
        if settled.retry_in is not None:
            step = self.plan.steps[result.step_key]
            self.log.warning("step.retrying", step_key=step.key, executor=step.executor, attempt=result.attempt,
                             delay_s=settled.retry_in, error=result.error.summary() if result.error else None)
            self._notify("attempt_failed", step, result)  # its logs, and `rivers run`'s retried attempts
            return
        for final in settled.finals:
            step = self.plan.steps[final.step_key]
            event = "step.succeeded" if final.status == "succeeded" else "step.failed"
            fields: dict[str, Any] = {"step_key": step.key, "executor": step.executor, "attempt": final.attempt,
                                      "duration_s": round(final.duration_s, 6)}
            if final.error is not None:
                fields["error"] = final.error.summary()
            (self.log.info if final.status == "succeeded" else self.log.error)(event, **fields)
            self._notify(final.status, step, final)
        for key in settled.skipped:
            self.log.warning("step.skipped", step_key=key, executor=self.plan.steps[key].executor,
                             reason="upstream dependency failed")
            self._notify("skipped", self.plan.steps[key], None)
        self._dispatch_all(settled.ready)

    def _notify(self, event: str, step: Step, result: StepResult | None) -> None:
        """Events wait until the steps dispatched meanwhile have left (`_tell`), in the order they happened."""
        if self.listener is not None:
            self._told.append((event, step, result))

    def _tell(self) -> None:
        told, self._told = self._told, []
        if self.listener is not None:
            for event, step, result in told:
                self.listener(event, step, result)

    def _run_result(self) -> RunResult:
        failed = self.state.failed_assets()
        return RunResult(
            success=not failed, run_id=self.run_id, materialized_assets=self.state.materialized_assets(),
            failed_assets=failed, step_results=dict(self.state.results),
        )

    def first_exception(self) -> BaseException | None:
        """The final failure listed first (by level, then name), rebuilt when it happened in another process."""
        if not self.state.failures:
            return None
        order = {key: index for index, key in enumerate(self.state.report_order())}
        return failure_exception(min(self.state.failures, key=lambda result: order.get(result.step_key, len(order))))


def failure_exception(result: StepResult) -> BaseException:
    """The original exception of a failed step, or one of the same type rebuilt from its report."""
    if result.exception is not None:
        return result.exception
    error = result.error
    assert error is not None
    cls = imported_exception_class(error.module, error.type)
    try:
        exc = cls(error.message) if cls is not None else ExecutionError(error.summary())
    except Exception:  # noqa: BLE001 - a class whose constructor wants other arguments
        exc = ExecutionError(error.summary())
    exc.__cause__ = RemoteTraceback(error.traceback)
    return exc
