"""The run state machine: which steps are ready, running, waiting to retry, done or skipped. Pure, no I/O.

The coordinator feeds it facts (a step was dispatched, a result arrived, the time is now) and acts on the
decisions it returns: which attempt to dispatch, when to retry, what became ready or skipped. Every rule of
a run lives here: attempts and retry policies, backoff timers, fan-out instances and their max_concurrency,
and the results a resumed run starts from.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from rivers import defaults
from rivers.plan import Plan, Step
from rivers.results import OutputResult, StepResult, StepStatus
from rivers.runtime import SKIPPED_REASON

SKIPPED_MESSAGE = f"ExecutionError: {SKIPPED_REASON}"


@dataclass
class Settled:
    """What one result decided."""

    retry_in: float | None = None  # the attempt failed and the step runs again after this many seconds
    finals: list[StepResult] = field(default_factory=list)  # final results (an instance's may end its mapped step)
    ready: list[Step] = field(default_factory=list)  # steps to dispatch now (downstream, or a throttled instance)
    skipped: list[str] = field(default_factory=list)  # steps that will not run: an upstream output failed


@dataclass
class _Throttle:
    """At most `limit` instances of one mapped step in flight (max_concurrency)."""

    limit: int
    running: set[str] = field(default_factory=set)
    waiting: deque[Step] = field(default_factory=deque)


class RunState:
    """Steps and outputs of one run; a step becomes ready when every output it needs succeeded."""

    def __init__(self, plan: Plan, seed: Mapping[str, StepResult] | None = None,
                 executor_limits: Mapping[str, int] | None = None) -> None:
        self.plan = plan
        self.seed = dict(seed or {})  # final results of a resumed run: those steps do not run again
        self.waiting: dict[str, int] = {key: len(step.needs) for key, step in plan.steps.items()}
        self.status: dict[str, str] = dict.fromkeys(plan.steps, "pending")
        self.output_status: dict[str, str] = {}
        self.results: dict[str, StepResult] = {}
        self.attempts: dict[str, int] = dict.fromkeys(plan.steps, 0)
        self.reasons: dict[str, list[str]] = {}  # step -> why each of its failed attempts failed (FailureReason values)
        self.failures: list[StepResult] = []  # final failures, in the order they happened
        self.fan_out_keys: dict[str, list[str]] = {}  # fan-out source output -> instance keys
        self.instances: dict[str, list[str]] = {}  # mapped step -> its instance steps, in source order
        self.completed: dict[str, list[str]] = {}  # mapped step -> its instance steps, in completion order
        self.throttles: dict[str, _Throttle] = {}  # mapped step key (max_concurrency) -> its throttle
        self.executor_throttles = {key: _Throttle(limit) for key, limit in (executor_limits or {}).items()}
        self.timers: list[tuple[float, int, Step]] = []  # (due, tiebreak, step): retries waiting for their backoff
        self._tiebreak = 0

    # -- starting ----------------------------------------------------------------------------
    def begin(self) -> list[Step]:
        """The steps to dispatch first; a resumed run first records its stored results."""
        for key, step in list(self.plan.steps.items()):
            result = self.seed.get(key)
            if result is None or self.status[key] != "pending":
                continue
            if step.fan_out_source is not None:  # its instances are what the collect step reads
                self._add_instances(step, self._instance_steps(step, self.fan_out_keys.get(step.fan_out_source, [])))
                for instance in self.instances[key]:
                    self._seed_instance(self.plan.steps[instance])
            self.start(step)
            self._finish(result)
        return [step for key, step in self.plan.steps.items()
                if self.status[key] == "pending" and self.waiting[key] == 0]

    def start(self, step: Step) -> int:
        """Mark a step running; returns its attempt number (1-based)."""
        self.status[step.key] = "running"
        self.attempts[step.key] += 1
        return self.attempts[step.key]

    def admit(self, step: Step) -> int | None:
        """Start a step unless a limit is reached (then it waits its turn): its mapped step's max_concurrency or
        its executor's max_concurrent_steps. Returns the attempt; a retried step keeps its places."""
        throttles = self._throttles_of(step)
        for throttle in throttles:
            if step.key not in throttle.running and len(throttle.running) >= throttle.limit:
                throttle.waiting.append(step)
                return None
        for throttle in throttles:
            throttle.running.add(step.key)
        return self.start(step)

    def _throttles_of(self, step: Step) -> list[_Throttle]:
        found = [self.throttles.get(step.instance_of or ""), self.executor_throttles.get(step.executor)]
        return [throttle for throttle in found if throttle is not None]

    # -- fan-out ----------------------------------------------------------------------------
    def expand(self, mapped: Step, keys: list[str], limit: int | None) -> tuple[list[Step], StepResult | None]:
        """A mapped step becomes one instance per key: (instances to run, the mapped step's result if none must)."""
        self.start(mapped)
        self._add_instances(mapped, self._instance_steps(mapped, keys))
        if limit is not None:
            self.throttles[mapped.key] = _Throttle(limit)
        to_run = [self.plan.steps[key] for key in self.instances[mapped.key]
                  if not self._seed_instance(self.plan.steps[key])]
        if not to_run:  # no items, or a resumed run that had finished them all
            return [], self.mapped_result(mapped.key)
        return to_run, None

    def source_keys(self, mapped: Step) -> list[str] | None:
        """The instance keys of a mapped step, when its source ran in this run (else the caller reads them)."""
        assert mapped.fan_out_source is not None
        return self.fan_out_keys.get(mapped.fan_out_source)

    def _instance_steps(self, mapped: Step, keys: list[str]) -> list[Step]:
        return [dataclasses.replace(mapped, key=f"{mapped.key}__{key}", outputs=(f"{mapped.key}__{key}",),
                                    needs=frozenset(), instance_of=mapped.key, index=index)
                for index, key in enumerate(keys)]

    def _add_instances(self, mapped: Step, instances: list[Step]) -> None:
        for step in instances:
            self.plan.steps[step.key] = step
            self.waiting[step.key] = 0
            self.status[step.key] = "pending"
            self.attempts[step.key] = 0
        self.instances[mapped.key] = [step.key for step in instances]
        self.completed[mapped.key] = []

    def _seed_instance(self, step: Step) -> bool:
        """Record a stored final result of an instance (a resumed run); False when it still has to run."""
        stored = self.seed.get(step.key)
        if stored is None:
            return False
        self.start(step)
        self._finish(stored)
        self.completed[step.instance_of].append(step.key)  # type: ignore[index]
        return True

    def mapped_result(self, mapped: str) -> StepResult:
        """The mapped step succeeds when every instance did; else it fails with the first instance failure."""
        failed = [self.results[key] for key in self.completed[mapped] if self.status[key] == "failed"]
        step = self.plan.steps[mapped]
        error = None
        if failed and failed[0].error is not None:
            first = failed[0].error
            message = f"fan-out instance '{failed[0].step_key}' failed: {first.message}"
            error = first.model_copy(update={"message": message})
        status: StepStatus = "failed" if failed else "succeeded"
        outputs = [OutputResult(name=out, status=status, error=error) for out in step.outputs]
        result = StepResult(run_id=failed[0].run_id if failed else "", step_key=mapped, attempt=1,
                            status=status, outputs=outputs, error=error)
        return result.with_exception(failed[0].exception if failed else None)

    # -- results ----------------------------------------------------------------------------
    def settle(self, result: StepResult, now: float) -> Settled:
        """Take one attempt's result: a retry (timer set), or a final result and what it makes ready or skips."""
        step = self.plan.steps[result.step_key]
        if result.status == "failed" and result.error is not None:
            self.reasons.setdefault(step.key, []).append(result.error.reason)
        delay = self.retry_delay(step, result)
        if delay is not None:
            self._tiebreak += 1
            heapq.heappush(self.timers, (now + delay, self._tiebreak, step))
            return Settled(retry_in=delay)
        settled = Settled()
        pending = [result]
        while pending:
            final = pending.pop(0)
            settled.finals.append(final)
            ready, skipped = self._finish(final)
            settled.ready.extend(ready)
            settled.skipped.extend(skipped)
            instance = self.plan.steps[final.step_key]
            settled.ready.extend(self._release(instance))
            if instance.instance_of is None:
                continue
            self.completed[instance.instance_of].append(instance.key)
            if len(self.completed[instance.instance_of]) == len(self.instances[instance.instance_of]):
                pending.append(self.mapped_result(instance.instance_of).model_copy(update={"run_id": final.run_id}))
        return settled

    def retry_delay(self, step: Step, result: StepResult) -> float | None:
        """Seconds until the next attempt of a failed step, or None when this failure is final.

        The step's policy decides; without one, a dead worker or a lost lease gets INFRA_RETRIES.
        """
        error = result.error
        if result.status != "failed" or error is None or step.fan_out_source is not None:
            return None
        if error.reason == "cancelled":
            return None  # the run was cancelled: nothing runs again
        policy = step.retry
        if policy is None:
            return 0.0 if error.infrastructure and result.attempt <= defaults.INFRA_RETRIES else None
        if result.attempt > policy.max_retries or not policy.retries(exception_type(result), error.reason):
            return None
        return policy.delay(result.attempt)

    def due(self, now: float) -> list[Step]:
        """Steps whose retry backoff has passed: dispatch them again."""
        ready: list[Step] = []
        while self.timers and self.timers[0][0] <= now:
            ready.append(heapq.heappop(self.timers)[2])
        return ready

    def next_due(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def _release(self, step: Step) -> list[Step]:
        """A step ended: its places go to the next steps waiting for them (dispatched, hence admitted, again)."""
        ready: list[Step] = []
        for throttle in self._throttles_of(step):
            throttle.running.discard(step.key)
            if throttle.waiting:
                ready.append(throttle.waiting.popleft())
        return ready

    def _finish(self, result: StepResult) -> tuple[list[Step], list[str]]:
        """Record a step's final result; returns (steps now ready, steps now skipped)."""
        self.results[result.step_key] = result
        self.status[result.step_key] = result.status
        if result.status == "failed":
            self.failures.append(result)
        ready: list[Step] = []
        skipped: list[str] = []
        for out in result.outputs:
            self.output_status[out.name] = out.status
            if out.fan_out_keys is not None:
                self.fan_out_keys[out.name] = out.fan_out_keys
            for consumer in self.plan.consumers.get(out.name, ()):
                if self.status[consumer] != "pending":
                    continue
                if out.status == "failed":
                    self._skip(consumer, skipped)
                else:
                    self.waiting[consumer] -= 1
                    if self.waiting[consumer] == 0:
                        ready.append(self.plan.steps[consumer])
        return ready, skipped

    def _skip(self, key: str, skipped: list[str]) -> None:
        stack = [key]
        while stack:
            current = stack.pop()
            if self.status[current] != "pending":
                continue
            self.status[current] = "skipped"
            skipped.append(current)
            for out in self.plan.steps[current].outputs:
                self.output_status[out] = "skipped"
                stack.extend(self.plan.consumers.get(out, ()))

    # -- the outcome ---------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.status.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def report_order(self) -> list[str]:
        """The order failures are listed (and the first raised) in, as rivers lists them: by level, then by name,
        whatever order the repository listed its assets in; the instances of a mapped step right after it."""
        return self._with_instances(sorted(self._planned(), key=lambda key: (self.plan.steps[key].level, key)))

    def listing_order(self) -> list[str]:
        """The order of `materialized_assets`, as rivers lists them: depth first over the names in order, each
        step right after its upstreams (theirs in name order too)."""
        order: list[str] = []
        seen: set[str] = set()
        for root in sorted(self._planned()):
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:  # iterative: a chain of thousands of steps is not a recursion limit
                key, expanded = stack.pop()
                if expanded:
                    order.append(key)
                    continue
                if key in seen:
                    continue
                seen.add(key)
                stack.append((key, True))
                upstream = [up for up in self.plan.steps[key].upstream_steps if self.plan.steps[up].instance_of is None]
                stack.extend((up, False) for up in sorted(upstream, reverse=True) if up not in seen)
        return self._with_instances(order)

    def _planned(self) -> list[str]:
        return [key for key, step in self.plan.steps.items() if step.instance_of is None]

    def _with_instances(self, keys: list[str]) -> list[str]:
        return [each for key in keys for each in (key, *self.instances.get(key, ()))]

    def materialized_assets(self) -> list[str]:
        """Every name the run attempted: run (succeeded or failed) or skipped because an upstream failed."""
        return [out for key in self.listing_order() if self.status[key] in ("succeeded", "failed", "skipped")
                for out in self.plan.steps[key].outputs]

    def failed_assets(self) -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        for key in self.report_order():
            step = self.plan.steps[key]
            result = self.results.get(key)
            for out in step.outputs:
                if self.output_status.get(out) == "skipped":
                    failed.append((out, SKIPPED_MESSAGE))
                elif result is not None:
                    report = next((o for o in result.outputs if o.name == out), None)
                    if report is not None and report.status == "failed" and report.error is not None:
                        failed.append((out, report.error.summary()))
        return failed


def exception_type(result: StepResult) -> type[BaseException] | None:
    """The type of a failed step's exception: the live one, else the class its report names, if already imported."""
    if result.exception is not None:
        return type(result.exception)
    if result.error is None:
        return None
    return imported_exception_class(result.error.module, result.error.type)


def imported_exception_class(module: str, qualname: str) -> type[BaseException] | None:
    """The exception class a report names, if its module is already imported here: a report never imports."""
    import sys

    found: object = sys.modules.get(module)
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        return None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None
