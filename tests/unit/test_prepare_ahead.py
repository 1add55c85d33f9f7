"""While its steps run elsewhere, the coordinator builds the next steps' specs (Prepared): a step's downstream
leaves without waiting for its spec to be built, and what leaves is exactly what would have been built then."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import rivers as rs
from rivers.coordinator.coordinator import Coordinator
from rivers.exceptions import SpecError
from rivers.plan import Plan
from rivers.queues.base import StepRequest
from rivers.results import OutputResult, StepResult
from rivers.runtime import StepCall
from rivers.spec import Prepared, spec_from_call, spec_json_of
from tests.unit.plans import parallel_plan


@rs.Asset
def first() -> int:
    return 1


@rs.Asset
def second(first: int) -> int:
    return first + 1


@rs.Asset
def third(second: int) -> int:
    return second + 1


@rs.Asset
def other(first: int) -> int:
    return first


class RemoteQueue:
    """Steps run "elsewhere": each is reported by a thread once its downstream was prepared (or at once when it
    has none), so the coordinator has waited in between; what it prepares with is the real Prepared."""

    executor = "parallel"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.specs = Prepared(lambda call: spec_json_of(call, "parallel"))
        self.events: list[tuple[str, str]] = []
        self.sent: dict[str, str] = {}
        self._prepared: dict[str, threading.Event] = {key: threading.Event() for key in plan.steps}

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return False  # a queue that cannot hold a step for its upstream's report (only Redis can)

    def disarm(self, call: StepCall) -> None:
        raise AssertionError("nothing was armed")

    def prepare(self, call: StepCall) -> None:
        self.events.append(("prepare", call.step_key))
        self.specs.prepare(call)
        self._prepared[call.step_key].set()

    def put(self, request: StepRequest) -> None:
        self.events.append(("put", request.step.key))
        self.sent[request.step.key] = self.specs.take(request.call)
        downstream = [k for out in request.step.outputs for k in self.plan.consumers.get(out, ())]

        def report() -> None:
            for key in downstream:
                self._prepared[key].wait(10)
            request.report(StepResult(run_id=request.call.run_id, step_key=request.step.key, attempt=1,
                                      status="succeeded",
                                      outputs=[OutputResult(name=o, status="succeeded") for o in request.step.outputs]))

        threading.Thread(target=report, daemon=True).start()

    def flush(self) -> None:
        pass

    def cancel_run(self, run_id: str) -> None:
        pass


def test_each_downstream_is_prepared_before_it_is_put_and_sent_as_built_then() -> None:
    plan = parallel_plan([first, second, third, other])
    queue = RemoteQueue(plan)
    result = Coordinator("run-1", plan, {"parallel": queue}, {}, {}).execute()
    assert result.success
    for key in ("second", "third", "other"):
        assert queue.events.index(("prepare", key)) < queue.events.index(("put", key))
    assert ("prepare", "first") not in queue.events  # ready at once: nothing to do ahead
    assert queue.events.count(("put", "second")) == 1
    for key, sent in queue.sent.items():  # what was built ahead is what building it at dispatch gives
        call = Coordinator("run-1", plan, {"parallel": queue}, {}, {})._call(plan.steps[key], 1)
        assert sent == spec_from_call(call, "parallel").model_dump_json()


def call_of(key: str, attempt: int = 1) -> StepCall:
    plan = parallel_plan([first, second])
    return Coordinator("run-1", plan, {}, {}, {})._call(plan.steps[key], attempt)


def test_a_spec_built_ahead_is_taken_once_and_only_for_its_attempt() -> None:
    built: list[str] = []
    cache = Prepared(lambda call: spec_json_of(call, "parallel", lambda spec: built.append(spec.step_key)))
    cache.prepare(call_of("second"))
    cache.prepare(call_of("second"))  # once per attempt
    assert built == ["second"]
    assert cache.take(call_of("second", 2)) == spec_from_call(call_of("second", 2), "parallel").model_dump_json()
    assert built == ["second", "second"]  # attempt 2 was built when taken
    assert cache.take(call_of("second")) == spec_from_call(call_of("second"), "parallel").model_dump_json()
    cache.take(call_of("second"))
    assert built == ["second", "second", "second"]  # taken: gone


def test_a_spec_that_cannot_be_built_fails_when_put_not_when_prepared() -> None:
    def refuse(spec: Any) -> None:
        raise SpecError(f"step '{spec.step_key}' refused")

    cache = Prepared(lambda call: spec_json_of(call, "parallel", refuse))
    cache.prepare(call_of("second"))  # no error here: the coordinator is only using idle time
    with pytest.raises(SpecError, match="step 'second' refused"):
        cache.take(call_of("second"))


def test_specs_of_steps_that_never_ran_are_dropped_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Prepared, "MAX_ENTRIES", 2)
    built: list[int] = []
    cache = Prepared(lambda call: spec_json_of(call, "parallel", lambda spec: built.append(spec.attempt)))
    for attempt in (1, 2, 3):
        cache.prepare(call_of("second", attempt))
    cache.take(call_of("second", 1))  # dropped: built again
    cache.take(call_of("second", 3))  # kept
    assert built == [1, 2, 3, 1]


def test_a_redis_queue_sends_the_job_it_built_ahead_signed(server: Any, client: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Built ahead: the job's id, its data and its signature under RIVERS_SECRET; sent: those very bytes, with the
    times of its enqueue."""
    from rivers.distributed.jobs import decode_job
    from rivers.queues import keys
    from rivers.queues.redis import redis_queue

    monkeypatch.setenv("RIVERS_SECRET", "s3cret")
    queue = redis_queue(server.url, "parallel")
    plan = parallel_plan([first, second])
    coordinator = Coordinator("run-9", plan, {}, {}, {})
    call = coordinator._call(plan.steps["second"], 1)
    queue.prepare(call)
    (built,) = queue._jobs._built.values()
    queue.put(StepRequest(plan.steps["second"], call, lambda result: None))
    queue.flush()
    stored = client.hgetall(keys.job_key(built.job_id))
    assert stored[keys.JOB_DATA.encode()] == built.data
    assert stored[keys.JOB_SIGNATURE.encode()].decode() == built.signature
    job = decode_job(built.job_id, stored[keys.JOB_DATA.encode()], stored[keys.JOB_SIGNATURE.encode()], b"s3cret")
    assert job.spec_json == spec_from_call(call, "parallel").model_dump_json()
    assert client.lrange(keys.queue_key("parallel"), 0, -1) == [built.job_id.encode()]
    assert not queue._jobs._built  # taken once
    queue.cancel_run("run-9")
