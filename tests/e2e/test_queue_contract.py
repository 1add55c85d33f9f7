"""The StepQueue contract, one suite for both implementations: the embedded parallel queue and the Redis queue.

Requests are built the way the coordinator builds them (Coordinator._call on a planned step); the test plays
the coordinator: it puts, and collects what `report` receives.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import rivers as rs
from rivers.coordinator.coordinator import Coordinator
from rivers.executors.parallel import parallel_queue
from rivers.io.base import InputContext
from rivers.plan import build_plan
from rivers.queues.base import StepQueue, StepRequest
from rivers.results import StepResult
from rivers.run import run_resources
from rivers.runtime import run_step
from tests.pipelines import queue_contract_pipeline as qp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

TIMEOUT = 30.0


class Reports:
    """A thread-safe record of every report: (result, thread it came from)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[StepResult, int]] = []

    def __call__(self, result: StepResult) -> None:
        with self._lock:
            self._items.append((result, threading.get_ident()))

    @property
    def items(self) -> list[tuple[StepResult, int]]:
        with self._lock:
            return list(self._items)

    def of(self, run_id: str) -> list[StepResult]:
        return [result for result, _ in self.items if result.run_id == run_id]

    def wait(self, predicate: Callable[[list[StepResult]], bool], message: str) -> list[StepResult]:
        wait_for(lambda: predicate([result for result, _ in self.items]), TIMEOUT, message=message)
        return [result for result, _ in self.items]

    def wait_count(self, run_id: str, count: int) -> list[StepResult]:
        self.wait(lambda results: len([r for r in results if r.run_id == run_id]) >= count,
                  f"{count} reports of run {run_id}")
        return self.of(run_id)


class Run:
    """One run of the contract repository: a planned Coordinator used only to build requests."""

    def __init__(self, repo: rs.CodeRepository, reports: Reports, run_id: str | None = None) -> None:
        graph = repo._resolve()
        plan = build_plan(graph, set(graph.producer), rs.Executor.parallel(2), True)
        self.run_id = run_id or f"run-{uuid.uuid4().hex[:8]}"
        self.coordinator = Coordinator(self.run_id, plan, {}, run_resources(repo, {}), {})
        self.reports = reports

    def request(self, key: str, attempt: int | None = None) -> StepRequest:
        step = self.coordinator.plan.steps[key]
        if attempt is None:
            attempt = self.coordinator.state.admit(step)
            assert attempt is not None
        return StepRequest(step, self.coordinator._call(step, attempt), self.reports)

    def instances(self) -> list[StepRequest]:
        """The fan-out instances of `fanned`, as the coordinator makes them (the source runs here, in process)."""
        state = self.coordinator.state
        source = self.coordinator.plan.steps["fanned/numbers"]
        result = run_step(self.coordinator._call(source, state.admit(source) or 1))
        assert result.status == "succeeded", result.error
        [mapped] = state.settle(result, time.monotonic()).ready
        to_run, done = state.expand(mapped, state.source_keys(mapped) or [], None)
        assert done is None and len(to_run) == qp.ITEMS
        return [self.request(step.key) for step in to_run]


def load(repo: rs.CodeRepository, name: str) -> Any:
    handler = repo._resolve().node_of(name).outputs[name].handler
    return handler.load_input(InputContext(name, None, {}))


def written(repo: rs.CodeRepository, name: str) -> bool:
    try:
        load(repo, name)
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(params=["memory", "redis"])
def step_queue(request: pytest.FixtureRequest) -> Iterator[StepQueue]:
    if request.param == "memory":
        yield parallel_queue(rs.Executor.parallel(2))  # process-wide, shared with other tests: not shut down
        return
    from rivers.queues.redis import redis_queue

    url: str = request.getfixturevalue("redis_url")
    request.getfixturevalue("workers").start(url, count=1, concurrency=2)
    yield redis_queue(url, "parallel")


@pytest.fixture
def repo(tmp_path: Path) -> rs.CodeRepository:
    return qp.make_repo(tmp_path)


def send(step_queue: StepQueue, request: StepRequest) -> None:
    """What the coordinator does: put, then flush before it waits (a queue may hold puts until then)."""
    step_queue.put(request)
    step_queue.flush()


def finish_with_sentinel(step_queue: StepQueue, repo: rs.CodeRepository, reports: Reports) -> None:
    """Put a step after everything else and wait for its report: whatever was still to come has come by then."""
    run = Run(repo, reports)
    send(step_queue, run.request("sentinel"))
    reports.wait_count(run.run_id, 1)


# -- (a) one report per put, from another thread, naming the attempt ----------------------------------------
def test_a_put_gets_exactly_one_report_from_another_thread(step_queue: StepQueue, repo: rs.CodeRepository) -> None:
    reports = Reports()
    run = Run(repo, reports)
    request = run.request("answer", attempt=3)
    send(step_queue, request)
    [result] = reports.wait_count(run.run_id, 1)
    assert result.status == "succeeded", result.error
    assert (result.run_id, result.step_key, result.attempt) == (run.run_id, "answer", 3)
    assert [(o.name, o.status) for o in result.outputs] == [("answer", "succeeded")]
    assert load(repo, "answer") == 42
    finish_with_sentinel(step_queue, repo, reports)
    assert len(reports.of(run.run_id)) == 1
    assert all(thread != threading.get_ident() for _, thread in reports.items)


# -- (b) the step's own exception ----------------------------------------------------------------------------
def test_a_raising_step_reports_its_error(step_queue: StepQueue, repo: rs.CodeRepository) -> None:
    reports = Reports()
    run = Run(repo, reports)
    send(step_queue, run.request("broken"))
    [result] = reports.wait_count(run.run_id, 1)
    assert (result.run_id, result.step_key, result.attempt, result.status) == (run.run_id, "broken", 1, "failed")
    assert result.error is not None
    assert (result.error.type, result.error.module) == ("ValueError", "builtins")
    assert result.error.message == "broken on purpose: 7"
    assert not result.error.infrastructure
    assert "broken on purpose" in result.error.traceback
    assert [(o.name, o.status) for o in result.outputs] == [("broken", "failed")]
    assert not written(repo, "broken")


# -- (c) a step that cannot be run as written ------------------------------------------------------------------
def test_an_output_that_does_not_match_its_annotation_fails_clearly(
    step_queue: StepQueue, repo: rs.CodeRepository
) -> None:
    reports = Reports()
    run = Run(repo, reports)
    send(step_queue, run.request("mistyped"))
    [result] = reports.wait_count(run.run_id, 1)
    assert (result.step_key, result.status) == ("mistyped", "failed")
    assert result.error is not None
    assert result.error.type == "AssetOutputValidationError"
    assert result.error.message == (
        "'mistyped' returned str, which does not match its return annotation int"
    ), result.error.message
    assert not written(repo, "mistyped")


def test_a_step_that_cannot_be_sent_fails_naming_it(step_queue: StepQueue, repo: rs.CodeRepository) -> None:
    reports = Reports()
    run = Run(repo, reports)
    send(step_queue, run.request("unsendable/lock_name"))
    [result] = reports.wait_count(run.run_id, 1)
    assert (result.run_id, result.step_key, result.attempt, result.status) == (
        run.run_id, "unsendable/lock_name", 1, "failed")
    assert result.error is not None and result.error.type == "SpecError"
    assert "'unsendable/lock_name'" in result.error.message
    assert "cannot be sent to a worker" in result.error.message
    assert {o.name for o in result.outputs} == {"unsendable/lock_name", "unsendable"}
    assert all(o.status == "failed" for o in result.outputs)


# -- (d) many puts at once ----------------------------------------------------------------------------------------
def test_many_concurrent_puts_each_get_exactly_one_report(step_queue: StepQueue, repo: rs.CodeRepository) -> None:
    reports = Reports()
    run = Run(repo, reports)
    requests = run.instances()
    with ThreadPoolExecutor(8) as pool:  # several coordinator threads putting at once
        list(pool.map(functools.partial(send, step_queue), requests))
    reports.wait_count(run.run_id, qp.ITEMS)
    finish_with_sentinel(step_queue, repo, reports)
    results = reports.of(run.run_id)
    counts = Counter(r.step_key for r in results)
    assert sorted(counts) == sorted(r.step.key for r in requests)
    assert [key for key, n in counts.items() if n != 1] == []
    assert [r.step_key for r in results if r.status != "succeeded" or r.attempt != 1] == []
    for request in requests:  # each instance wrote its own value, through the mapped task's handler
        slot = request.call.outputs[0]
        assert slot.name == request.step.key == f"fanned/times_ten__{request.step.index}"
        assert slot.handler.load_input(InputContext(slot.name, None, {})) == request.step.index * 10


# -- (e) cancelling a run --------------------------------------------------------------------------------------------
def test_cancelled_queued_steps_are_not_reported_succeeded(step_queue: StepQueue, repo: rs.CodeRepository) -> None:
    reports = Reports()
    holding = Run(repo, reports)
    send(step_queue, holding.request("hold_a"))
    send(step_queue, holding.request("hold_b"))
    gate = qp.Gate(dir=repo.resources["gate"].dir)  # type: ignore[attr-defined]
    wait_for(lambda: gate.started("hold_a") and gate.started("hold_b"), TIMEOUT, message="both workers busy")

    cancelled = Run(repo, reports)
    requests = cancelled.instances()[:10]
    for request in requests:
        send(step_queue, request)
    step_queue.cancel_run(cancelled.run_id)
    gate.open()

    reports.wait_count(holding.run_id, 2)
    assert {r.step_key: r.status for r in reports.of(holding.run_id)} == {"hold_a": "succeeded", "hold_b": "succeeded"}
    finish_with_sentinel(step_queue, repo, reports)
    assert [r.step_key for r in reports.of(cancelled.run_id) if r.status == "succeeded"] == []
    assert len(reports.of(cancelled.run_id)) <= len(requests)  # at most one each, if any
