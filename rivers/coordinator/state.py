"""The run state machine: which steps are ready, running, done or skipped. Pure, no I/O."""

from __future__ import annotations

from rivers.plan import Plan, Step
from rivers.results import OutputResult, StepResult, StepStatus
from rivers.runtime import SKIPPED_REASON

SKIPPED_MESSAGE = f"ExecutionError: {SKIPPED_REASON}"


class RunState:
    """Tracks steps and outputs of one run; a step becomes ready when every output it needs succeeded."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.waiting: dict[str, int] = {key: len(step.needs) for key, step in plan.steps.items()}
        self.status: dict[str, str] = dict.fromkeys(plan.steps, "pending")
        self.output_status: dict[str, str] = {}
        self.results: dict[str, StepResult] = {}
        self.attempts: dict[str, int] = dict.fromkeys(plan.steps, 0)
        self.failures: list[StepResult] = []  # final failures, in the order they happened
        self.fan_out_keys: dict[str, list[str]] = {}  # fan-out source output -> instance keys
        self.instances: dict[str, list[str]] = {}  # mapped step -> its instance steps, in source order
        self.completed: dict[str, list[str]] = {}  # mapped step -> its instance steps, in completion order

    def initial_ready(self) -> list[Step]:
        return [step for key, step in self.plan.steps.items() if self.waiting[key] == 0]

    def start(self, step: Step) -> int:
        """Mark a step running; returns its attempt number (1-based)."""
        self.status[step.key] = "running"
        self.attempts[step.key] += 1
        return self.attempts[step.key]

    def finish(self, result: StepResult) -> tuple[list[Step], list[str]]:
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

    def add_instances(self, mapped: Step, instances: list[Step]) -> None:
        """Make the instances of a mapped step part of the run (they are ready at once)."""
        for step in instances:
            self.plan.steps[step.key] = step
            self.waiting[step.key] = 0
            self.status[step.key] = "pending"
            self.attempts[step.key] = 0
        self.instances[mapped.key] = [step.key for step in instances]
        self.completed[mapped.key] = []

    def instance_finished(self, instance: Step) -> StepResult | None:
        """Record a finished instance; once all are finished, the mapped step's own result."""
        mapped = instance.instance_of
        assert mapped is not None
        self.completed[mapped].append(instance.key)
        if len(self.completed[mapped]) < len(self.instances[mapped]):
            return None
        return self.mapped_result(mapped)

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
                            status="failed" if failed else "succeeded", outputs=outputs, error=error)
        return result.with_exception(failed[0].exception if failed else None)

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

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.status.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def _report_order(self) -> list[str]:
        """Plan order, with the instances of a mapped step right after it."""
        order: list[str] = []
        for key, step in self.plan.steps.items():
            if step.instance_of is None:
                order.append(key)
                order.extend(self.instances.get(key, ()))
        return order

    def materialized_assets(self) -> list[str]:
        return [out for key in self._report_order() if self.status[key] in ("succeeded", "failed")
                for out in self.plan.steps[key].outputs]

    def failed_assets(self) -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        for key in self._report_order():
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
