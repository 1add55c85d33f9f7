"""Hooks, retry policies and backoff (API.md §7) on the in-process executor."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import rivers as rs
from tests.unit.conftest import make_repo


def flaky(failures: int, exc: type[Exception] = ValueError, name: str = "flaky", **kwargs: Any) -> Any:
    """An asset that fails `failures` times, then returns its attempt count."""
    attempts: list[int] = []

    def body() -> int:
        attempts.append(1)
        if len(attempts) <= failures:
            raise exc(f"attempt {len(attempts)}")
        return len(attempts)

    body.__name__ = name
    return rs.Asset(body, **kwargs), attempts


# -- retries ----------------------------------------------------------------------------------
def test_retries_until_success() -> None:
    asset, attempts = flaky(2, retry=rs.RetryPolicy(max_retries=3))
    repo = make_repo([asset])
    result = repo.materialize()
    assert result.success and len(attempts) == 3
    assert repo.load_node("flaky") == 3
    assert result.step_results["flaky"].attempt == 3


def test_runs_at_most_one_plus_max_retries_and_reports_the_last_attempt() -> None:
    asset, attempts = flaky(10, retry=rs.RetryPolicy(max_retries=2))
    result = make_repo([asset]).materialize(raise_on_error=False)
    assert len(attempts) == 3
    assert result.failed_assets == [("flaky", "ValueError: attempt 3")]


def test_no_policy_means_one_attempt() -> None:
    asset, attempts = flaky(1)
    assert not make_repo([asset]).materialize(raise_on_error=False).success
    assert len(attempts) == 1


def test_retry_on_classes_match_subclasses_only() -> None:
    retried, attempts = flaky(1, KeyError, retry=rs.RetryPolicy(1, retry_on=[LookupError]))
    assert make_repo([retried]).materialize().success and len(attempts) == 2
    not_retried, attempts2 = flaky(1, ValueError, retry=rs.RetryPolicy(1, retry_on=[LookupError]))
    assert not make_repo([not_retried]).materialize(raise_on_error=False).success
    assert len(attempts2) == 1


def test_retry_on_transient() -> None:
    transient, attempts = flaky(1, TimeoutError, retry=rs.RetryPolicy(1, retry_on=rs.RetryOn.TRANSIENT))
    assert make_repo([transient]).materialize().success and len(attempts) == 2
    other, attempts2 = flaky(1, ValueError, retry=rs.RetryPolicy(1, retry_on=rs.RetryOn.TRANSIENT))
    assert not make_repo([other]).materialize(raise_on_error=False).success and len(attempts2) == 1


@pytest.mark.parametrize("bad", [[int], ["ValueError"], [ValueError, 3], ["timeout"], [rs.RetryOn.TRANSIENT]])
def test_retry_on_non_exception_classes_is_a_type_error(bad: list[Any]) -> None:
    with pytest.raises(TypeError, match=r"^retry_on elements must be exception types or FailureReason values, got "):
        rs.RetryPolicy(retry_on=bad)


@pytest.mark.parametrize(("raised", "reason"), [(MemoryError, "out_of_memory"), (TimeoutError, "timeout"),
                                                (ValueError, "error")])
def test_an_attempt_records_why_it_failed_as_rivers_does(raised: type[Exception], reason: str) -> None:
    """MemoryError is out_of_memory and TimeoutError timeout (rivers 0.6.2 records the same), else error."""
    asset, _ = flaky(1, raised)
    result = make_repo([asset]).materialize(raise_on_error=False)
    error = result.step_results["flaky"].error
    assert error is not None and error.reason == reason


@pytest.mark.parametrize(("raised", "listed", "retried"), [
    (MemoryError, [rs.FailureReason.OUT_OF_MEMORY], True),
    (TimeoutError, [rs.FailureReason.TIMEOUT], True),
    (ValueError, [rs.FailureReason.ERROR], True),
    (ValueError, [rs.FailureReason.TIMEOUT, KeyError], False),
    (KeyError, [rs.FailureReason.TIMEOUT, KeyError], True),
    (MemoryError, [rs.FailureReason.TIMEOUT], False),
])
def test_retry_on_lists_failure_reasons_beside_exception_classes(
    raised: type[Exception], listed: list[Any], retried: bool
) -> None:
    asset, attempts = flaky(1, raised, retry=rs.RetryPolicy(1, retry_on=listed))
    assert make_repo([asset]).materialize(raise_on_error=False).success is retried
    assert len(attempts) == (2 if retried else 1)


def test_retry_precedence_node_then_materialize_then_default() -> None:
    own, own_attempts = flaky(100, name="own", retry=rs.RetryPolicy(max_retries=1))
    inherited, inherited_attempts = flaky(100, name="inherited")
    repo = make_repo([own, inherited], default_retry_policy=rs.RetryPolicy(max_retries=3))
    repo.materialize(raise_on_error=False, retry=rs.RetryPolicy(max_retries=2))
    assert (len(own_attempts), len(inherited_attempts)) == (2, 3)
    repo.materialize(raise_on_error=False)
    assert (len(own_attempts), len(inherited_attempts)) == (4, 3 + 4)


def test_named_retry_policies() -> None:
    asset, attempts = flaky(1, retry="twice")
    repo = make_repo([asset], retries={"twice": rs.RetryPolicy(2)})
    assert repo.materialize().success and len(attempts) == 2
    other, other_attempts = flaky(1, name="other")
    repo2 = make_repo([other], retries={"once": rs.RetryPolicy(1)}, default_retry_policy="once")
    assert repo2.materialize().success and len(other_attempts) == 2


def test_job_retry_policy() -> None:
    asset, attempts = flaky(1)
    repo = make_repo([asset], jobs=[rs.Job("j", [asset], retry=rs.RetryPolicy(1))])
    assert repo.get_job("j").execute().success and len(attempts) == 2


def test_retry_with_backoff_still_finishes() -> None:
    asset, attempts = flaky(2, retry=rs.RetryPolicy(2, backoff=rs.Backoff.constant(0.01)))
    assert make_repo([asset]).materialize().success and len(attempts) == 3


def test_backoff_delays() -> None:
    constant = rs.Backoff.constant(2.0)
    assert [constant.delay(n) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]
    linear = rs.Backoff.linear(1.0, initial=0.5)
    assert [linear.delay(n) for n in (1, 2, 3)] == [1.5, 2.5, 3.5]
    exponential = rs.Backoff.exponential(1.0)
    assert [exponential.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert rs.Backoff.exponential(1.0, factor=3.0).delay(3) == 9.0
    assert rs.Backoff.exponential(1.0, max_delay=5.0).delay(10) == 5.0
    jittered = [rs.Backoff.constant(2.0, jitter=0.5).delay(1) for _ in range(400)]
    assert all(1.0 <= delay <= 3.0 for delay in jittered)  # delay·(1 ± J), as rivers 0.6.2 spreads it
    assert min(jittered) < 1.5 and max(jittered) > 2.5  # both ways (400 draws: each side misses with p = 0.75**400)
    assert rs.RetryPolicy(3, backoff=rs.Backoff.linear(2.0)).delay(2) == 4.0
    assert rs.RetryPolicy(3).delay(2) == 0.0


def test_retry_policy_defaults() -> None:
    policy = rs.RetryPolicy()
    assert policy.max_retries == 1 and policy.retry_on is rs.RetryOn.ALL and policy.backoff is None


# -- hooks ------------------------------------------------------------------------------------
def test_success_hook_receives_output_and_metadata() -> None:
    seen: list[rs.HookContext] = []

    @rs.Asset(hooks=[rs.Hook.success(seen.append), rs.Hook.failure(lambda hc: seen.append(hc))])
    def hooked(context: rs.AssetExecutionContext) -> int:
        context.add_output_metadata({"rows": 2})
        return 42

    result = make_repo([hooked]).materialize()
    (hc,) = seen
    assert hc.asset_name == "hooked" and hc.run_id == result.run_id
    assert hc.output == 42 and hc.error is None
    assert hc.metadata is not None and hc.metadata["rows"] == rs.MetadataValue.int(2)


def test_failure_hook_receives_the_exception() -> None:
    seen: list[tuple[str, Any]] = []

    @rs.Asset(hooks=[rs.Hook.success(lambda hc: seen.append(("success", hc))),
                     rs.Hook.failure(lambda hc: seen.append(("failure", hc)))])
    def hurt() -> int:
        raise ValueError("ouch")

    make_repo([hurt]).materialize(raise_on_error=False)
    ((kind, hc),) = seen
    assert kind == "failure"
    assert isinstance(hc.error, ValueError) and str(hc.error) == "ouch"
    assert hc.output is None


def test_hook_errors_are_never_fatal() -> None:
    def broken_hook(hc: rs.HookContext) -> None:
        raise RuntimeError("hook broke")

    @rs.Asset(hooks=[rs.Hook.success(broken_hook)])
    def fine() -> int:
        return 1

    repo = make_repo([fine])
    assert repo.materialize().success
    assert repo.load_node("fine") == 1


def test_hooks_fire_once_per_step_outcome_not_per_retried_attempt() -> None:
    events: list[str] = []
    asset, _ = flaky(1, retry=rs.RetryPolicy(1), hooks=[
        rs.Hook.success(lambda hc: events.append("success")),
        rs.Hook.failure(lambda hc: events.append("failure")),
    ])
    make_repo([asset]).materialize()
    assert events == ["success"]
    failing, _ = flaky(5, name="failing", retry=rs.RetryPolicy(2), hooks=[
        rs.Hook.failure(lambda hc: events.append("failure")),
    ])
    make_repo([failing]).materialize(raise_on_error=False)
    assert events == ["success", "failure"]


class Cfg(BaseModel):
    n: int = 1


def test_hook_config_is_the_step_config() -> None:
    seen: list[Any] = []

    @rs.Asset(hooks=[rs.Hook.success(lambda hc: seen.append(hc.config))])
    def configured(context: rs.AssetExecutionContext[Cfg]) -> int:
        return context.config.n

    make_repo([configured]).materialize(config={"configured": {"n": 4}})
    assert seen == [Cfg(n=4)]


def test_compute_outside_kubernetes() -> None:
    compute = rs.Compute(cpu="1", memory="1Gi", gpu=1)
    assert (compute.cpu, compute.memory, compute.gpu) == ("1", "1Gi", 1)


def test_reprs_read_as_the_calls_that_build_them() -> None:
    """rivers 0.6.2 shows `RetryPolicy(max_retries=2)` and `RetryOn.TRANSIENT`; we add only what differs from the
    defaults, written as it would be typed."""
    assert repr(rs.RetryPolicy(max_retries=2)) == "RetryPolicy(max_retries=2)"
    assert repr(rs.RetryOn.TRANSIENT) == "RetryOn.TRANSIENT"
    assert repr(rs.FailureReason.TIMEOUT) == "FailureReason.TIMEOUT"
    policy = rs.RetryPolicy(2, backoff=rs.Backoff.fixed([0.5, 2]), retry_on=[KeyError, rs.FailureReason.TIMEOUT])
    assert repr(policy) == ("RetryPolicy(max_retries=2, backoff=Backoff.fixed([0.5, 2]), "
                            "retry_on=[KeyError, FailureReason.TIMEOUT])")
    linear = rs.Backoff.linear(1, initial=2, jitter=0.5, max_delay=10)
    assert repr(rs.RetryPolicy(1, backoff=linear, retry_on=rs.RetryOn.TRANSIENT)) == (
        "RetryPolicy(max_retries=1, backoff=Backoff.linear(1, initial=2, jitter=0.5, max_delay=10), "
        "retry_on=RetryOn.TRANSIENT)")
    assert repr(rs.Backoff.exponential(0.5, factor=3)) == "Backoff.exponential(0.5, factor=3)"
    assert repr(rs.Backoff.constant(1.5)) == "Backoff.constant(1.5)"


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: rs.RetryPolicy(1, retry_on=ValueError), rs.ConfigurationError,
     "retry_on must be RetryOn.ALL, RetryOn.TRANSIENT, or a list of exception types / FailureReason values, got "),
    (lambda: rs.RetryPolicy(1.5), TypeError, "max_retries must be a whole number, got 1.5"),
    (lambda: rs.RetryPolicy("2"), TypeError, "max_retries must be a whole number, got '2'"),
    (lambda: rs.RetryPolicy(1, backoff=1.0), TypeError, "backoff must be a Backoff"),
    (lambda: rs.Backoff.exponential(1.0, factor=0), rs.ConfigurationError,
     "Backoff.exponential factor must be > 0, got 0"),
])
def test_a_retry_policy_that_cannot_work_is_refused_when_defined(
    make: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        make()
    assert str(raised.value).startswith(message)


def test_an_empty_retry_on_list_retries_nothing_as_in_rivers() -> None:
    asset, attempts = flaky(1, retry=rs.RetryPolicy(2, retry_on=[]))
    assert not make_repo([asset]).materialize(raise_on_error=False).success and len(attempts) == 1


@pytest.mark.parametrize(("gpu", "kept"), [("1", 1), (" 2 ", 2), (1, 1), (0, 0)])
def test_compute_takes_gpus_as_rivers_does_text_or_a_number(gpu: Any, kept: int) -> None:
    compute = rs.Compute(gpu=gpu)
    assert compute.gpu == kept and repr(compute) == f"Compute(gpu={kept})"
    assert repr(rs.Compute(cpu="1", memory="1Gi")) == "Compute(cpu='1', memory='1Gi')"


@pytest.mark.parametrize("gpu", ["x", "0.5", -1, 1.5, True])
def test_compute_refuses_gpus_that_are_not_a_whole_number(gpu: Any) -> None:
    with pytest.raises(rs.ConfigurationError, match=r"^Compute\(gpu=\.\.\.\) must be a whole number of GPUs, got "):
        rs.Compute(gpu=gpu)
