"""While the coordinator's loop only waits, the thread a result arrives on settles it and dispatches the steps
it made ready (no thread switch on the way from a step's end to its downstream); otherwise the loop does."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import rivers as rs
from rivers.coordinator.coordinator import Coordinator
from rivers.io.base import BaseIOHandler, InputContext, OutputContext
from rivers.plan import Plan, build_plan
from rivers.queues.base import StepRequest
from rivers.results import OutputResult, StepResult
from rivers.runtime import StepCall


class NullIOHandler(BaseIOHandler):
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        return None

    def load_input(self, context: InputContext) -> Any:
        return None


@rs.Asset
def up() -> int:
    return 1


@rs.Asset
def down(up: int) -> int:
    return up


def plan_of(assets: list[Any]) -> Plan:
    repo = rs.CodeRepository(assets, default_executor=rs.Executor.parallel(), default_io_handler=NullIOHandler())
    graph = repo._resolve()
    return build_plan(graph, set(graph.producer), rs.Executor.parallel(), True)


def succeeded(request: StepRequest) -> StepResult:
    outputs = [OutputResult(name=o, status="succeeded") for o in request.step.outputs]
    return StepResult(run_id=request.call.run_id, step_key=request.step.key, attempt=request.call.attempt,
                      status="succeeded", outputs=outputs)


class Queue:
    """Reports each step from a thread of its own (`threaded`) or from put itself; records the thread of each put."""

    executor = "parallel"

    def __init__(self, threaded: bool, fail_on: str | None = None) -> None:
        self.threaded = threaded
        self.fail_on = fail_on
        self.put_on: dict[str, threading.Thread] = {}
        self.reporters: dict[str, threading.Thread] = {}

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
    plan = plan_of([up, down])
    queue = Queue(threaded=True)
    coordinator = Coordinator("run-1", plan, {"parallel": queue}, {}, {})
    original = coordinator._report

    def report_when_waiting(result: StepResult) -> None:
        while not coordinator._waiting:
            threading.Event().wait(0.001)
        original(result)

    coordinator._report = report_when_waiting  # type: ignore[method-assign]
    assert coordinator.execute().success
    assert queue.put_on["down"] is queue.reporters["up"]


def test_a_result_reported_while_the_loop_is_busy_is_taken_by_the_loop() -> None:
    plan = plan_of([up, down])
    queue = Queue(threaded=False)  # reported inside put: the loop itself is dispatching
    assert Coordinator("run-1", plan, {"parallel": queue}, {}, {}).execute().success
    assert queue.put_on["down"] is threading.main_thread()


def test_an_error_while_a_reporter_drives_is_raised_by_the_run() -> None:
    plan = plan_of([up, down])
    queue = Queue(threaded=True, fail_on="down")
    coordinator = Coordinator("run-1", plan, {"parallel": queue}, {}, {})
    original = coordinator._report

    def report_when_waiting(result: StepResult) -> None:
        while not coordinator._waiting:
            threading.Event().wait(0.001)
        original(result)

    coordinator._report = report_when_waiting  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="cannot send 'down'"):
        coordinator.execute()
    assert queue.put_on["down"] is queue.reporters["up"]
