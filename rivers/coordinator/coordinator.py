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
import dataclasses
import heapq
import queue
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from rivers import defaults
from rivers.coordinator.state import RunState
from rivers.definitions.graph import CollectNode
from rivers.definitions.policies import HookContext, RetryPolicy
from rivers.exceptions import ExecutionError
from rivers.io.base import InputContext
from rivers.logs import get_logger
from rivers.plan import Plan, Step
from rivers.queues.base import StepQueue, StepRequest
from rivers.resolve import ResolvedNode
from rivers.results import RemoteTraceback, RunResult, StepError, StepResult
from rivers.runtime import StepCall, fan_out_keys, fire_hooks, run_step, run_step_async

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
        seed: Mapping[str, StepResult] | None = None,
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
        self.throttles: dict[str, _Throttle] = {}
        self.interruptions: dict[str, int] = {}  # step key -> attempts stopped by another step's dying process
        self.log = get_logger().bind(run_id=run_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.seed = dict(seed or {})  # final results of a resumed run: those steps do not run again

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
        try:
            self._dispatch_all(self._seeded() if self.seed else self.state.initial_ready())
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
        self._fire_graph_hooks()
        return self._run_result()

    def _seeded(self) -> list[Step]:
        """Record the stored results of a resumed run; the steps still to run that are ready."""
        for key, step in list(self.plan.steps.items()):
            result = self.seed.get(key)
            if result is not None and self.state.status[key] == "pending":
                if step.fan_out_source is not None:  # its instances are what the collect step reads
                    instances = self._instances(step)
                    self.state.add_instances(step, instances)
                    for instance in instances:
                        self._seed_instance(instance)
                self.state.start(step)
                self.state.finish(result)
        return [step for key, step in self.plan.steps.items()
                if self.state.status[key] == "pending" and self.state.waiting[key] == 0]

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
        if step.fan_out_source is not None:
            self._expand(step)
            return
        if step.instance_of is not None and not self._throttle_admits(step):
            return
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

    # -- fan-out ----------------------------------------------------------------------------
    def _expand(self, mapped: Step) -> None:
        """A mapped step never runs: it becomes one instance step per item of its source."""
        self.state.start(mapped)
        try:
            instances = self._instances(mapped)
        except Exception as exc:  # noqa: BLE001 - the mapped step fails, its downstream is skipped
            self._settle(StepResult.failed(self.run_id, mapped.key, 1, mapped.outputs, exc))
            return
        self.state.add_instances(mapped, instances)
        limit = getattr(mapped.node.definition, "max_concurrency", None)
        if limit is not None:
            self.throttles[mapped.key] = _Throttle(limit)
        self.log.info("step.fanned_out", step_key=mapped.key, instances=len(instances))
        to_run = [step for step in instances if not self._seed_instance(step)]
        if not to_run:  # no items, or a resumed run that had finished them all
            self._settle(self.state.mapped_result(mapped.key).model_copy(update={"run_id": self.run_id}))
            return
        self._dispatch_all(to_run)

    def _instances(self, mapped: Step) -> list[Step]:
        """One step per item of the mapped step's source, keyed by DynamicOutput keys or positions."""
        source = mapped.fan_out_source
        assert source is not None
        keys = self.state.fan_out_keys.get(source)
        if keys is None:  # the source was not produced in this run: read it through its handler
            item_param = next(p for p in mapped.node.params if p.kind == "item")
            assert item_param.handler is not None
            value = item_param.handler.load_input(InputContext(source, mapped.key, item_param.metadata))
            keys = fan_out_keys(source, value)
        return [
            dataclasses.replace(mapped, key=f"{mapped.key}__{key}", outputs=(f"{mapped.key}__{key}",),
                                needs=frozenset(), instance_of=mapped.key, index=index)
            for index, key in enumerate(keys)
        ]

    def _seed_instance(self, step: Step) -> bool:
        """Record a stored final result of an instance (a resumed run); False when it still has to run."""
        stored = self.seed.get(step.key)
        if stored is None:
            return False
        self.state.start(step)
        self.state.finish(stored)
        self.state.instance_finished(step)
        return True

    def _throttle_admits(self, step: Step) -> bool:
        throttle = self.throttles.get(step.instance_of or "")
        if throttle is None or step.key in throttle.running:
            return True
        if len(throttle.running) >= throttle.limit:
            throttle.waiting.append(step)
            return False
        throttle.running.add(step.key)
        return True

    def _release_throttle(self, step: Step) -> None:
        throttle = self.throttles.get(step.instance_of or "")
        if throttle is None:
            return
        throttle.running.discard(step.key)
        if throttle.waiting:
            self._dispatch(throttle.waiting.popleft())

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
            retry=node.retry or self.retry,
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
            retry=node.retry or self.retry,
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
        if result.status == "failed" and step.fan_out_source is None and self._should_retry(step, result):
            policy = step.node.retry or self.retry
            interrupted = result.error is not None and result.error.interrupted
            delay = policy.delay(result.attempt) if policy and not interrupted else 0.0
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
        if step.instance_of is not None:
            self._release_throttle(step)
            mapped_result = self.state.instance_finished(step)
            if mapped_result is not None:
                self._settle(mapped_result.model_copy(update={"run_id": self.run_id}))
        for key in skipped:
            self.log.warning("step.skipped", step_key=key, executor=self.plan.steps[key].executor,
                             reason="upstream dependency failed")
            self._notify("skipped", self.plan.steps[key], None)
        self._dispatch_all(ready)

    def _should_retry(self, step: Step, result: StepResult) -> bool:
        """The step's policy decides (without one: INFRA_RETRIES for a dead worker or a lost lease, else none).

        An attempt stopped because another step's process died beside it is not the step's failure: it runs again.
        """
        policy = step.node.retry or self.retry
        error = result.error
        if error is not None and error.interrupted:  # another step's crash stopped it: not one of its attempts
            stopped = self.interruptions[step.key] = self.interruptions.get(step.key, 0) + 1
            if stopped <= defaults.MAX_INTERRUPTIONS:
                return True
        if policy is None:
            lost = error is not None and error.infrastructure
            counted = result.attempt - self.interruptions.get(step.key, 0)
            return lost and counted <= defaults.INFRA_RETRIES
        if result.attempt - self.interruptions.get(step.key, 0) > policy.max_retries:
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


@dataclasses.dataclass
class _Throttle:
    """At most `limit` instances of one mapped step in flight (max_concurrency)."""

    limit: int
    running: set[str] = dataclasses.field(default_factory=set)
    waiting: deque[Step] = dataclasses.field(default_factory=deque)


def exception_type(result: StepResult) -> type[BaseException] | None:
    if result.exception is not None:
        return type(result.exception)
    if result.error is None:
        return None
    return _import_exception_class(result.error)


def _import_exception_class(error: StepError) -> type[BaseException] | None:
    """The exception class a report names, if its module is already imported here: a report never imports."""
    found: Any = sys.modules.get(error.module)
    try:
        for part in error.type.split("."):
            found = getattr(found, part)
    except AttributeError:
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
