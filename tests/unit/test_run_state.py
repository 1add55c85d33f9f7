"""RunState by hand: no coordinator, no queue, no process. Results are built here and fed to the state machine."""

from __future__ import annotations

import pytest

import rivers as rs
from rivers import defaults
from rivers.coordinator.state import SKIPPED_MESSAGE, RunState
from rivers.exceptions import WorkerLost
from rivers.plan import Plan, Step, build_plan
from rivers.results import OutputResult, StepResult

RUN = "run-1"


# -- a diamond: root -> left, right -> joined --------------------------------------------------
@rs.Asset
def root() -> int:
    return 1


@rs.Asset
def left(root: int) -> int:
    return root + 1


@rs.Asset
def right(root: int) -> int:
    return root + 2


@rs.Asset
def joined(left: int, right: int) -> int:
    return left + right


# -- a fan-out graph: items -> map(double, max_concurrency=2) -> collect -> total; report reads it ---------
@rs.Task
def items() -> list[int]:
    return [1, 2, 3]


@rs.Task
def double(x: int) -> int:
    return 2 * x


@rs.Task
def total(values: list[int]) -> int:
    return sum(values)


@rs.Asset.from_graph()
def fanned() -> int:
    return total(items().map(double, max_concurrency=2).collect())


@rs.Asset
def report(fanned: int) -> str:
    return f"{fanned}"


class Transient(ConnectionError):
    """A subclass of a class a policy lists; module-level so a report naming it resolves here."""


MAPPED = "fanned/double"
SOURCE = "fanned/items"
COLLECT = "fanned/double__collect"
TOTAL = "fanned/total"


def plan_of(assets: list[object], retry: rs.RetryPolicy | None = None) -> Plan:
    repo = rs.CodeRepository(assets, default_executor=rs.Executor.in_process())
    graph = repo._resolve()
    return build_plan(graph, set(graph.producer), rs.Executor.in_process(), True, retry)


def diamond(retry: rs.RetryPolicy | None = None, seed: dict[str, StepResult] | None = None) -> RunState:
    return RunState(plan_of([root, left, right, joined], retry), seed)


def fan(seed: dict[str, StepResult] | None = None) -> RunState:
    return RunState(plan_of([fanned, report]), seed)


def ok(step: Step | str, attempt: int = 1, fan_out_keys: list[str] | None = None,
       outputs: tuple[str, ...] | None = None) -> StepResult:
    key = step if isinstance(step, str) else step.key
    names = outputs if outputs is not None else (step.outputs if isinstance(step, Step) else (key,))
    return StepResult(run_id=RUN, step_key=key, attempt=attempt, status="succeeded",
                      outputs=[OutputResult(name=name, status="succeeded", fan_out_keys=fan_out_keys)
                               for name in names])


def fail(step: Step, attempt: int, exc: BaseException, **flags: bool) -> StepResult:
    return StepResult.failed(RUN, step.key, attempt, step.outputs, exc, **flags)


def keys_of(steps: list[Step]) -> list[str]:
    return [step.key for step in steps]


def run_to(state: RunState, key: str) -> tuple[Step, int]:
    step = state.plan.steps[key]
    attempt = state.admit(step)
    assert attempt is not None
    return step, attempt


# -- starting and settling -----------------------------------------------------------------------
def test_begin_returns_the_roots_only() -> None:
    state = diamond()
    assert keys_of(state.begin()) == ["root"]
    assert state.status == dict.fromkeys(["root", "left", "right", "joined"], "pending")
    assert state.waiting == {"root": 0, "left": 1, "right": 1, "joined": 2}
    assert keys_of(fan().begin()) == [SOURCE]


def test_admit_starts_an_attempt_and_success_makes_the_downstream_ready() -> None:
    state = diamond()
    step = state.begin()[0]
    assert state.admit(step) == 1
    assert state.status["root"] == "running"
    result = ok(step)
    settled = state.settle(result, now=0.0)
    assert settled.retry_in is None and settled.skipped == []
    assert settled.finals == [result]
    assert keys_of(settled.ready) == ["left", "right"]

    step, _ = run_to(state, "left")
    assert state.settle(ok(step), 0.0).ready == []  # joined still waits for right
    step, _ = run_to(state, "right")
    assert keys_of(state.settle(ok(step), 0.0).ready) == ["joined"]
    step, _ = run_to(state, "joined")
    state.settle(ok(step), 0.0)
    assert state.counts == {"succeeded": 4}
    assert state.failed_assets() == []
    assert state.materialized_assets() == ["root", "left", "right", "joined"]


def test_a_failure_skips_its_whole_downstream() -> None:
    state = diamond()
    step, attempt = run_to(state, "root")
    settled = state.settle(fail(step, attempt, ValueError("boom")), 0.0)
    assert settled.retry_in is None
    assert [f.status for f in settled.finals] == ["failed"]
    assert settled.ready == []
    assert sorted(settled.skipped) == ["joined", "left", "right"]
    assert state.status == {"root": "failed", "left": "skipped", "right": "skipped", "joined": "skipped"}
    assert state.failed_assets() == [
        ("root", "ValueError: boom"), ("left", SKIPPED_MESSAGE), ("right", SKIPPED_MESSAGE),
        ("joined", SKIPPED_MESSAGE),
    ]
    assert SKIPPED_MESSAGE == "ExecutionError: Skipped: upstream dependency failed"
    assert [r.step_key for r in state.failures] == ["root"]
    assert state.materialized_assets() == ["root", "left", "right", "joined"]  # attempted: run or skipped


def test_a_failure_beside_a_success_skips_only_what_needs_it() -> None:
    state = diamond()
    step, _ = run_to(state, "root")
    state.settle(ok(step), 0.0)
    step, _ = run_to(state, "left")
    state.settle(ok(step), 0.0)
    step, attempt = run_to(state, "right")
    settled = state.settle(fail(step, attempt, KeyError("k")), 0.0)
    assert settled.skipped == ["joined"]
    assert state.failed_assets() == [("right", "KeyError: 'k'"), ("joined", SKIPPED_MESSAGE)]


# -- retries without a policy ------------------------------------------------------------------------
def test_without_a_policy_an_infrastructure_failure_is_retried_infra_retries_times() -> None:
    state = diamond()
    step, attempt = run_to(state, "root")
    for expected in range(1, defaults.INFRA_RETRIES + 1):
        assert attempt == expected
        settled = state.settle(fail(step, attempt, WorkerLost("worker died"), infrastructure=True), now=10.0)
        assert settled.retry_in == 0.0 and settled.finals == [] and settled.skipped == []
        assert state.status["root"] == "running"
        assert state.next_due() == 10.0
        assert keys_of(state.due(10.0)) == ["root"]
        assert state.next_due() is None
        attempt = state.admit(step)
    assert attempt == defaults.INFRA_RETRIES + 1
    settled = state.settle(fail(step, attempt, WorkerLost("worker died"), infrastructure=True), now=10.0)
    assert settled.retry_in is None
    assert [f.attempt for f in settled.finals] == [defaults.INFRA_RETRIES + 1]
    assert state.status["root"] == "failed" and state.timers == []


def test_without_a_policy_a_plain_error_is_final() -> None:
    state = diamond()
    step, attempt = run_to(state, "root")
    assert state.retry_delay(step, fail(step, attempt, ValueError("x"))) is None
    settled = state.settle(fail(step, attempt, ValueError("x")), 0.0)
    assert settled.retry_in is None and state.status["root"] == "failed"
    assert state.timers == [] and state.next_due() is None


def test_a_success_is_never_retried() -> None:
    state = diamond(rs.RetryPolicy(max_retries=3))
    step, attempt = run_to(state, "root")
    assert state.retry_delay(step, ok(step, attempt)) is None


# -- retry policies ------------------------------------------------------------------------------------
def test_policy_delays_follow_the_backoff_and_timers_fire_only_when_due() -> None:
    policy = rs.RetryPolicy(max_retries=2, backoff=rs.Backoff.exponential(2.0, factor=3.0))
    state = diamond(policy)
    step, attempt = run_to(state, "root")
    assert step.retry is policy  # the run's policy, resolved into the step

    settled = state.settle(fail(step, attempt, ValueError("1")), now=100.0)
    assert settled.retry_in == 2.0
    assert state.next_due() == 102.0
    assert state.due(101.999) == []
    assert state.status["root"] == "running"
    assert keys_of(state.due(102.0)) == ["root"]
    assert state.due(102.0) == [] and state.next_due() is None

    assert state.admit(step) == 2
    assert state.settle(fail(step, 2, ValueError("2")), now=200.0).retry_in == 6.0
    assert state.next_due() == 206.0
    assert state.due(205.0) == []
    assert keys_of(state.due(1_000.0)) == ["root"]

    assert state.admit(step) == 3
    settled = state.settle(fail(step, 3, ValueError("3")), now=300.0)  # 1 + max_retries attempts: final
    assert settled.retry_in is None and [f.attempt for f in settled.finals] == [3]
    assert sorted(settled.skipped) == ["joined", "left", "right"]
    assert state.next_due() is None


@pytest.mark.parametrize(("backoff", "delays"), [
    (rs.Backoff.constant(1.5), [1.5, 1.5, 1.5]),
    (rs.Backoff.linear(2.0, initial=1.0), [3.0, 5.0, 7.0]),
    (rs.Backoff.exponential(1.0, max_delay=3.0), [1.0, 2.0, 3.0]),
    (None, [0.0, 0.0, 0.0]),
])
def test_retry_delay_per_backoff(backoff: rs.Backoff | None, delays: list[float]) -> None:
    state = diamond(rs.RetryPolicy(max_retries=3, backoff=backoff))
    step, _ = run_to(state, "root")
    assert [state.retry_delay(step, fail(step, n, ValueError("x"))) for n in (1, 2, 3, 4)] == [*delays, None]


def test_timers_fire_in_due_order() -> None:
    policy = rs.RetryPolicy(max_retries=1, backoff=rs.Backoff.constant(5.0))
    state = diamond(policy)
    step, _ = run_to(state, "root")
    state.settle(ok(step), 0.0)
    left_step, _ = run_to(state, "left")
    right_step, _ = run_to(state, "right")
    state.settle(fail(right_step, 1, ValueError("r")), now=1.0)  # due at 6
    state.settle(fail(left_step, 1, ValueError("l")), now=3.0)  # due at 8
    assert state.next_due() == 6.0
    assert keys_of(state.due(7.0)) == ["right"]
    assert state.next_due() == 8.0
    assert keys_of(state.due(100.0)) == ["left"]


def test_a_nodes_own_policy_wins_over_the_runs() -> None:
    own = rs.RetryPolicy(max_retries=5)

    @rs.Asset(retry=own)
    def flaky() -> int:
        return 1

    plan = plan_of([flaky, root], rs.RetryPolicy(max_retries=1))
    assert plan.steps["flaky"].retry is own
    assert plan.steps["root"].retry is not own and plan.steps["root"].retry.max_retries == 1  # type: ignore[union-attr]


def test_retry_on_exception_classes_from_the_live_exception() -> None:
    state = diamond(rs.RetryPolicy(max_retries=3, retry_on=[KeyError, ConnectionError]))
    step, _ = run_to(state, "root")
    assert state.retry_delay(step, fail(step, 1, KeyError("k"))) == 0.0
    assert state.retry_delay(step, fail(step, 1, Transient("subclass"))) == 0.0
    assert state.retry_delay(step, fail(step, 1, ValueError("not listed"))) is None
    # a worker that died is not in the list either: the policy decides, not INFRA_RETRIES
    assert state.retry_delay(step, fail(step, 1, WorkerLost("gone"), infrastructure=True)) is None


def test_retry_on_exception_classes_from_a_report_without_the_exception() -> None:
    """A report from another process names the class; it is found only in an already-imported module."""
    state = diamond(rs.RetryPolicy(max_retries=3, retry_on=[KeyError, ConnectionError]))
    step, _ = run_to(state, "root")

    def remote(exc: BaseException) -> StepResult:
        result = StepResult.model_validate_json(fail(step, 1, exc).model_dump_json())
        assert result.exception is None
        return result

    assert state.retry_delay(step, remote(KeyError("k"))) == 0.0
    assert state.retry_delay(step, remote(Transient("t"))) == 0.0  # tests.unit.test_run_state.Transient
    assert state.retry_delay(step, remote(ValueError("v"))) is None
    unknown = remote(KeyError("k"))
    assert unknown.error is not None
    unknown.error.module = "tests.never_imported_module_of_run_state"
    assert state.retry_delay(step, unknown) is None  # a report never imports: unknown type, not retried
    local = remote(KeyError("k"))
    assert local.error is not None
    local.error.module, local.error.type = __name__, "test_x.<locals>.Error"
    assert state.retry_delay(step, local) is None


def test_retry_on_transient() -> None:
    state = diamond(rs.RetryPolicy(max_retries=2, retry_on=rs.RetryOn.TRANSIENT))
    step, _ = run_to(state, "root")
    assert state.retry_delay(step, fail(step, 1, WorkerLost("gone"), infrastructure=True)) == 0.0
    assert state.retry_delay(step, fail(step, 1, TimeoutError("slow"))) == 0.0
    assert state.retry_delay(step, fail(step, 1, ValueError("v"))) is None


def test_retry_on_failure_reasons_reads_the_reason_of_a_report() -> None:
    """A report carries its FailureReason: a listed reason retries whatever the type (even one never imported)."""
    state = diamond(rs.RetryPolicy(max_retries=2, retry_on=[rs.FailureReason.OUT_OF_MEMORY,
                                                            rs.FailureReason.INFRASTRUCTURE]))
    step, _ = run_to(state, "root")
    oom = StepResult.model_validate_json(fail(step, 1, WorkerLost("OOMKilled"), infrastructure=True).model_dump_json())
    assert oom.error is not None
    oom.error.reason, oom.error.module = "out_of_memory", "tests.never_imported_module_of_run_state"
    assert state.retry_delay(step, oom) == 0.0
    assert state.retry_delay(step, fail(step, 1, WorkerLost("gone"), infrastructure=True)) == 0.0
    assert state.retry_delay(step, fail(step, 1, MemoryError())) == 0.0
    assert state.retry_delay(step, fail(step, 1, TimeoutError("slow"))) is None
    unknown = fail(step, 1, ValueError("v"))
    assert unknown.error is not None
    unknown.error.reason = "not a reason"  # a report from elsewhere: an unknown reason matches nothing
    assert state.retry_delay(step, unknown) is None


# -- fan-out --------------------------------------------------------------------------------------------
def expanded(state: RunState, keys: list[str]) -> tuple[Step, list[Step], StepResult | None]:
    """Run the source to success with these item keys and expand the mapped step as the coordinator does."""
    source, attempt = run_to(state, SOURCE)
    settled = state.settle(ok(source, attempt, fan_out_keys=keys), 0.0)
    assert keys_of(settled.ready) == [MAPPED]
    mapped = settled.ready[0]
    assert mapped.fan_out_source == SOURCE
    assert state.source_keys(mapped) == keys
    limit = getattr(mapped.node.definition, "max_concurrency", None)
    assert limit == 2
    to_run, done = state.expand(mapped, keys, limit)
    return mapped, to_run, done


def test_expand_makes_one_instance_per_key() -> None:
    state = fan()
    state.begin()
    _, to_run, done = expanded(state, ["0", "1", "2"])
    assert done is None
    assert keys_of(to_run) == [f"{MAPPED}__0", f"{MAPPED}__1", f"{MAPPED}__2"]
    for index, instance in enumerate(to_run):
        assert instance.instance_of == MAPPED and instance.index == index
        assert instance.outputs == (instance.key,) and instance.needs == frozenset()
        assert instance.fan_out_source is None  # an instance runs; only the mapped step expands
        assert state.plan.steps[instance.key] is instance and state.status[instance.key] == "pending"
    assert state.instances[MAPPED] == keys_of(to_run)
    assert state.status[MAPPED] == "running"


def test_max_concurrency_holds_instances_back_until_one_settles() -> None:
    state = fan()
    state.begin()
    _, (i0, i1, i2), _ = expanded(state, ["0", "1", "2"])
    assert state.admit(i0) == 1
    assert state.admit(i1) == 1
    assert state.admit(i2) is None  # two in flight: it waits its turn
    assert state.status[i2.key] == "pending" and state.attempts[i2.key] == 0

    settled = state.settle(ok(i1), 0.0)
    assert keys_of(settled.ready) == [i2.key]  # the slot i1 held goes to the waiting instance
    assert [f.step_key for f in settled.finals] == [i1.key]
    assert state.admit(i2) == 1

    settled = state.settle(ok(i0), 0.0)
    assert settled.ready == [] and [f.step_key for f in settled.finals] == [i0.key]
    settled = state.settle(ok(i2), 0.0)
    assert [f.step_key for f in settled.finals] == [i2.key, MAPPED]  # the last instance ends the mapped step
    mapped_result = settled.finals[1]
    assert mapped_result.status == "succeeded" and mapped_result.run_id == RUN
    assert [o.name for o in mapped_result.outputs] == [MAPPED]
    assert keys_of(settled.ready) == [COLLECT]
    assert state.completed[MAPPED] == [i1.key, i0.key, i2.key]  # completion order
    assert state.instances[MAPPED] == [i0.key, i1.key, i2.key]  # source order


def test_a_retried_instance_keeps_its_slot() -> None:
    plan = plan_of([fanned, report], rs.RetryPolicy(max_retries=1, backoff=rs.Backoff.constant(1.0)))
    state = RunState(plan)
    state.begin()
    _, (i0, i1, i2), _ = expanded(state, ["0", "1", "2"])
    state.admit(i0), state.admit(i1)
    assert state.admit(i2) is None
    settled = state.settle(fail(i0, 1, ValueError("flaky")), now=0.0)
    assert settled.retry_in == 1.0 and settled.ready == []  # nothing released: i0 runs again
    assert keys_of(state.due(1.0)) == [i0.key]
    assert state.admit(i0) == 2


def test_a_failed_instance_fails_the_mapped_step_and_skips_the_collect() -> None:
    state = fan()
    state.begin()
    _, (i0, i1, i2), _ = expanded(state, ["0", "1", "2"])
    for instance in (i0, i1):
        state.admit(instance)
    state.settle(ok(i0), 0.0)
    state.admit(i2)
    settled = state.settle(fail(i1, 1, ValueError("bad item")), 0.0)
    assert [f.step_key for f in settled.finals] == [i1.key]  # i2 still runs: no mapped result yet
    assert settled.skipped == []
    settled = state.settle(ok(i2), 0.0)
    assert [f.step_key for f in settled.finals] == [i2.key, MAPPED]
    mapped_result = settled.finals[1]
    assert mapped_result.status == "failed"
    assert mapped_result.error is not None
    assert mapped_result.error.message == f"fan-out instance '{i1.key}' failed: bad item"
    assert mapped_result.error.type == "ValueError"
    assert isinstance(mapped_result.exception, ValueError)
    assert settled.ready == []
    assert sorted(settled.skipped) == sorted([COLLECT, TOTAL, "report"])
    failed = dict(state.failed_assets())
    assert failed[i1.key] == "ValueError: bad item"
    assert failed[MAPPED] == f"ValueError: fan-out instance '{i1.key}' failed: bad item"
    assert failed["fanned"] == failed["report"] == failed[COLLECT] == SKIPPED_MESSAGE
    assert i0.key not in failed and i2.key not in failed


def test_no_items_gives_the_mapped_result_at_once() -> None:
    state = fan()
    state.begin()
    _, to_run, done = expanded(state, [])
    assert to_run == [] and done is not None
    assert done.step_key == MAPPED and done.status == "succeeded"
    assert state.instances[MAPPED] == []
    settled = state.settle(done.model_copy(update={"run_id": RUN}), 0.0)  # what the coordinator does
    assert keys_of(settled.ready) == [COLLECT]
    assert state.status[MAPPED] == "succeeded"


def test_a_failed_source_skips_the_mapped_step() -> None:
    state = fan()
    source, attempt = run_to(state, SOURCE)
    settled = state.settle(fail(source, attempt, TypeError("not a list")), 0.0)
    assert sorted(settled.skipped) == sorted([MAPPED, COLLECT, TOTAL, "report"])
    assert state.instances == {}


# -- resume ------------------------------------------------------------------------------------------------
def test_seeded_results_are_recorded_and_only_the_rest_runs() -> None:
    seed = {"root": ok("root"), "left": ok("left")}
    state = diamond(seed=seed)
    assert keys_of(state.begin()) == ["right"]
    assert state.status["root"] == state.status["left"] == "succeeded"
    assert state.results["root"] is seed["root"]
    step, _ = run_to(state, "right")
    assert keys_of(state.settle(ok(step), 0.0).ready) == ["joined"]


def test_seeded_fan_out_instances_do_not_run_again() -> None:
    keys = ["0", "1", "2"]
    seed = {SOURCE: ok(SOURCE, fan_out_keys=keys), f"{MAPPED}__0": ok(f"{MAPPED}__0"),
            f"{MAPPED}__2": ok(f"{MAPPED}__2")}
    state = fan(seed)
    ready = state.begin()
    assert keys_of(ready) == [MAPPED]
    assert state.status[SOURCE] == "succeeded"
    mapped = ready[0]
    keys_seen = state.source_keys(mapped)
    assert keys_seen == keys
    to_run, done = state.expand(mapped, keys_seen, 2)
    assert done is None
    assert keys_of(to_run) == [f"{MAPPED}__1"]
    assert state.status[f"{MAPPED}__0"] == state.status[f"{MAPPED}__2"] == "succeeded"
    assert state.completed[MAPPED] == [f"{MAPPED}__0", f"{MAPPED}__2"]
    assert state.admit(to_run[0]) == 1
    settled = state.settle(ok(to_run[0]), 0.0)
    assert [f.step_key for f in settled.finals] == [f"{MAPPED}__1", MAPPED]
    assert keys_of(settled.ready) == [COLLECT]


def test_every_instance_seeded_gives_the_mapped_result_without_running() -> None:
    keys = ["0", "1"]
    seed = {SOURCE: ok(SOURCE, fan_out_keys=keys), **{f"{MAPPED}__{k}": ok(f"{MAPPED}__{k}") for k in keys}}
    state = fan(seed)
    mapped = state.begin()[0]
    to_run, done = state.expand(mapped, state.source_keys(mapped) or [], 2)
    assert to_run == [] and done is not None and done.status == "succeeded"


def test_a_seeded_mapped_step_records_its_instances_and_readies_the_collect() -> None:
    keys = ["0", "1", "2"]
    seed = {SOURCE: ok(SOURCE, fan_out_keys=keys), MAPPED: ok(MAPPED),
            **{f"{MAPPED}__{k}": ok(f"{MAPPED}__{k}") for k in keys}}
    state = fan(seed)
    assert keys_of(state.begin()) == [COLLECT]
    assert state.instances[MAPPED] == [f"{MAPPED}__{k}" for k in keys]
    assert all(state.status[f"{MAPPED}__{k}"] == "succeeded" for k in keys)
    assert state.attempts[f"{MAPPED}__0"] == 1
    materialized = state.materialized_assets()
    assert materialized == [SOURCE, MAPPED, *(f"{MAPPED}__{k}" for k in keys)]
