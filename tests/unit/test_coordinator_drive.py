"""While the coordinator's loop only waits, the thread a result arrives on settles it and dispatches the steps
it made ready (no thread switch on the way from a step's end to its downstream); otherwise the loop does."""

from __future__ import annotations

import threading

import pytest

import rivers as rs
from rivers.coordinator.coordinator import Coordinator
from rivers.queues.base import StepRequest
from rivers.results import OutputResult, StepResult
from rivers.runtime import StepCall
from tests.unit.plans import parallel_plan


@rs.Asset
def up() -> int:
    return 1


@rs.Asset
def down(up: int) -> int:
    return up


def succeeded(request: StepRequest) -> StepResult:
    outputs = [OutputResult(name=o, status="succeeded") for o in request.step.outputs]
    return StepResult(run_id=request.call.run_id, step_key=request.step.key, attempt=request.call.attempt,
                      status="succeeded", outputs=outputs)


def reporting_while_waiting(coordinator: Coordinator) -> Coordinator:
    """Results reach `coordinator` only once its loop waits: deterministic, whatever the threads' timing."""
    original = coordinator._report

    def report_when_waiting(result: StepResult) -> None:
        while not coordinator._waiting:
            threading.Event().wait(0.001)
        original(result)

    coordinator._report = report_when_waiting  # type: ignore[method-assign]
    return coordinator


class Queue:
    """Reports each step from a thread of its own (`threaded`) or from put itself; records the thread of each put."""

    executor = "parallel"

    def __init__(self, threaded: bool, fail_on: str | None = None) -> None:
        self.threaded = threaded
        self.fail_on = fail_on
        self.put_on: dict[str, threading.Thread] = {}
        self.reporters: dict[str, threading.Thread] = {}

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return False  # a queue that cannot hold a step for its upstream's report (only Redis can)

    def disarm(self, call: StepCall) -> None:
        raise AssertionError("nothing was armed")

    def prepare(self, call: StepCall) -> None:
        pass

    def put(self, request: StepRequest) -> None:
        self.put_on[request.step.key] = threading.current_thread()
        if request.step.key == self.fail_on:
            raise RuntimeError(f"cannot send '{request.step.key}'")
        if not self.threaded:
            request.report(succeeded(request))
            return
        reporter = threading.Thread(target=lambda: request.report(succeeded(request)), daemon=True)
        self.reporters[request.step.key] = reporter
        reporter.start()

    def flush(self) -> None:
        pass

    def cancel_run(self, run_id: str) -> None:
        pass


def test_the_reporter_thread_drives_when_the_loop_waits() -> None:
    """Deterministic: 'up' is reported only once the loop is waiting."""
    plan = parallel_plan([up, down])
    queue = Queue(threaded=True)
    coordinator = reporting_while_waiting(Coordinator("run-1", plan, {"parallel": queue}, {}, {}))
    assert coordinator.execute().success
    assert queue.put_on["down"] is queue.reporters["up"]


def test_a_result_reported_while_the_loop_is_busy_is_taken_by_the_loop() -> None:
    plan = parallel_plan([up, down])
    queue = Queue(threaded=False)  # reported inside put: the loop itself is dispatching
    assert Coordinator("run-1", plan, {"parallel": queue}, {}, {}).execute().success
    assert queue.put_on["down"] is threading.main_thread()


def test_an_error_while_a_reporter_drives_is_raised_by_the_run() -> None:
    plan = parallel_plan([up, down])
    queue = Queue(threaded=True, fail_on="down")
    coordinator = reporting_while_waiting(Coordinator("run-1", plan, {"parallel": queue}, {}, {}))
    with pytest.raises(RuntimeError, match="cannot send 'down'"):
        coordinator.execute()
    assert queue.put_on["down"] is queue.reporters["up"]
