"""rivers 0.6 compatibility (issue 10): hooks (item 5), self-dependency first run (item 8), retries (item 10).

Each expectation was observed with rivers 0.6.2 side by side (cases noted per test); where we deliberately
differ the test says so.
"""

from __future__ import annotations

import math
import os
import pickle
import typing
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore
from pydantic import BaseModel

import rivers as rs
from rivers.spec import RetrySpec, _retry_policy, retry_spec
from tests.unit.conftest import make_repo
from tests.unit.test_run_state import diamond, fail, run_to

EARLY = "ValueError: early"


def on_ok(hc: rs.HookContext[Any]) -> None:
    """A module-level hook function (pickled by reference)."""


# -- Hook objects ------------------------------------------------------------------------------------
def test_hook_success_and_failure_are_classes_with_reprs() -> None:
    ok = rs.Hook.success(on_ok)
    bad = rs.Hook.failure(on_ok)
    assert isinstance(ok, rs.Hook.Success) and isinstance(ok, rs.Hook) and not isinstance(ok, rs.Hook.Failure)
    assert isinstance(bad, rs.Hook.Failure) and isinstance(bad, rs.Hook) and not isinstance(bad, rs.Hook.Success)
    assert repr(ok) == "Hook.Success(name='on_ok')" and repr(bad) == "Hook.Failure(name='on_ok')"
    assert ok.name == "on_ok" and ok.fn is on_ok
    with pytest.raises(AttributeError):
        ok.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="cannot create 'Hook' instances"):
        rs.Hook(on_ok, "x")


def test_hook_decorator_forms() -> None:
    @rs.Hook.success
    def plain(hc: rs.HookContext[Any]) -> None: ...

    @rs.Hook.failure(name="alert")
    def named(hc: rs.HookContext[Any]) -> None: ...

    assert repr(plain) == "Hook.Success(name='plain')" and callable(plain.fn)
    assert repr(named) == "Hook.Failure(name='alert')" and named.fn is not None and named.fn.__name__ == "named"
    assert repr(rs.Hook.success(on_ok, name="explicit")) == "Hook.Success(name='explicit')"
    assert rs.Hook.success(on_ok, name="").name == ""  # rivers keeps an explicit empty name
    assert rs.Hook.success(lambda hc: None).name == "<lambda>"
    unnamed = rs.Hook.success()  # no function, no name: the function bound later names it
    assert unnamed.fn is None and unnamed(on_ok).name == "on_ok"
    assert repr(rs.Hook.Success(on_ok, "direct")) == "Hook.Success(name='direct')"


def test_a_hook_bound_twice_is_refused() -> None:
    @rs.Hook.success
    def once(hc: rs.HookContext[Any]) -> None: ...

    with pytest.raises(rs.AssetDefinitionError,
                       match="Hook is already bound to a function and cannot be called as a decorator again"):
        once(on_ok)
    named = rs.Hook.failure(name="y")
    first, second = named(on_ok), named(on_ok)  # a name-only hook makes a new bound hook per call, as rivers
    assert first is not second and first is not named and named.fn is None
    with pytest.raises(rs.AssetDefinitionError, match="already bound"):
        first(on_ok)


def test_hook_arguments_checked() -> None:
    with pytest.raises(TypeError, match=r"Hook\.success needs a callable, got int"):
        rs.Hook.success(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Hook name must be a str, got NoneType"):
        rs.Hook.Success(on_ok, None)  # type: ignore[arg-type]


def test_hooks_pickle_by_reference() -> None:
    hook = rs.Hook.failure(on_ok, name="n")
    again = pickle.loads(pickle.dumps(hook))
    assert type(again) is rs.Hook.Failure and again.name == "n" and again.fn is on_ok


class Cfg(BaseModel):
    n: int = 3


def test_hook_context_is_subscriptable_and_has_a_hook_type() -> None:
    alias = rs.HookContext[Cfg]
    assert typing.get_origin(alias) is rs.HookContext and typing.get_args(alias) == (Cfg,)
    assert rs.HookContext("a", "r", output=1).hook_type == "success"
    assert rs.HookContext("a", "r", error=ValueError("x")).hook_type == "failure"


# -- Hooks in runs ------------------------------------------------------------------------------------
def recording_hooks() -> tuple[list[tuple[Any, ...]], list[rs.Hook]]:
    seen: list[tuple[Any, ...]] = []

    @rs.Hook.success
    def ok(hc: rs.HookContext[Cfg]) -> None:
        seen.append((hc.hook_type, hc.asset_name, hc.output, hc.metadata))

    @rs.Hook.failure(name="bad")
    def bad(hc: rs.HookContext[Cfg]) -> None:
        seen.append((hc.hook_type, hc.asset_name, str(hc.error), hc.metadata))

    return seen, [ok, bad]


def test_multi_asset_hooks_fire_once_per_output_end_to_end() -> None:
    """rivers 0.6.2: `ok a`, `ok b` with the output's value; `hc.metadata` is the output's AssetDef metadata."""
    seen, hooks = recording_hooks()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("a", metadata={"m": "a"}), rs.AssetDef("b")], name="ab",
                         hooks=hooks)
    def ab() -> Any:
        yield rs.Output(1, output_name="a")
        yield rs.Output(2, output_name="b", metadata={"rows": 2})

    @rs.Asset(hooks=hooks, metadata={"owner": "me"})
    def single(context: rs.AssetExecutionContext) -> int:
        return 7

    @rs.Asset(hooks=hooks)
    def bare() -> int:
        return 8

    result = make_repo([ab, single, bare]).materialize()
    assert result.success
    assert sorted(seen) == [
        ("success", "a", 1, {"m": "a"}),
        ("success", "b", 2, {"rows": rs.MetadataValue.int(2)}),  # ours adds the output's (rivers: None)
        ("success", "bare", 8, None),
        ("success", "single", 7, {"owner": "me"}),
    ]


def test_multi_asset_failure_fires_failure_hooks_once() -> None:
    """rivers 0.6.2: raising before any output fires one failure hook, under the first output's name."""
    seen, hooks = recording_hooks()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("e", metadata={"k": "1"}), rs.AssetDef("f")], name="ef",
                         hooks=hooks)
    def ef() -> Any:
        raise ValueError("early")

    result = make_repo([ef]).materialize(raise_on_error=False)
    assert dict(result.failed_assets) == {"e": EARLY, "f": EARLY}
    assert seen == [("failure", "e", "early", {"k": "1"})]


def test_multi_asset_partly_written_fires_success_per_output_and_failure_once() -> None:
    """rivers 0.6.2: `ok c` then one failure; rivers names the failure after the first output ('c', which
    succeeded) — plainly a bug; we name the output that failed."""
    seen, hooks = recording_hooks()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("c"), rs.AssetDef("d")], name="cd", hooks=hooks)
    def cd() -> Any:
        yield rs.Output(1, output_name="c")
        raise ValueError("half")

    make_repo([cd]).materialize(raise_on_error=False)
    assert seen == [("success", "c", 1, None), ("failure", "d", "half", None)]


def test_hooks_fire_only_for_the_selected_outputs() -> None:
    seen, hooks = recording_hooks()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("g"), rs.AssetDef("h")], name="gh", hooks=hooks)
    def gh() -> dict[str, int]:
        return {"g": 1, "h": 2}

    make_repo([gh]).materialize(selection=["g"])
    assert seen == [("success", "g", 1, None)]


def test_failure_hook_after_retries_and_config() -> None:
    """rivers 0.6.2: one failure hook after the last attempt; `hc.config` is the step's config."""
    seen: list[tuple[str, Any]] = []
    calls: list[int] = []

    @rs.Asset(retry=rs.RetryPolicy(2), hooks=[rs.Hook.failure(lambda hc: seen.append((hc.hook_type, hc.config)))])
    def flaky(context: rs.AssetExecutionContext[Cfg]) -> int:
        calls.append(1)
        raise ValueError(f"try {len(calls)}")

    result = make_repo([flaky]).materialize(raise_on_error=False)
    assert result.failed_assets == [("flaky", "ValueError: try 3")]
    assert seen == [("failure", Cfg(n=3))]


def test_a_hook_without_a_function_never_runs() -> None:
    """rivers 0.6.2 accepts `Hook.success(name=...)` in hooks=[...] and runs nothing for it."""

    @rs.Asset(hooks=[rs.Hook.success(name="unbound")])
    def fine() -> int:
        return 1

    assert make_repo([fine]).materialize().success


# -- Self-dependency ---------------------------------------------------------------------------------
class FileHandler(rs.BaseIOHandler):
    """One pickle file per asset in `root`; loading a missing one raises FileNotFoundError."""

    root: str

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        Path(self.root, context.asset_name).write_bytes(pickle.dumps(obj))

    def load_input(self, context: rs.InputContext) -> Any:
        return pickle.loads(Path(self.root, context.asset_name).read_bytes())


def test_self_dependency_first_run_gets_none(tmp_path: Path) -> None:
    """rivers 0.6.2: [None, 1, 2] over three runs (sync and async alike)."""
    seen: list[Any] = []

    @rs.Asset(io_handler=FileHandler(root=str(tmp_path)))
    def counter(self: rs.SelfDependency[int]) -> int:
        seen.append(self.get_inner())
        return (self.get_inner() or 0) + 1

    @rs.Asset(io_handler=FileHandler(root=str(tmp_path)))
    async def acounter(self: rs.SelfDependency[int]) -> int:
        seen.append(("async", self.get_inner()))
        return (self.get_inner() or 0) + 10

    repo = make_repo([counter, acounter])
    for _ in range(3):
        assert repo.materialize().success
    assert [v for v in seen if not isinstance(v, tuple)] == [None, 1, 2]
    assert [v for v in seen if isinstance(v, tuple)] == [("async", None), ("async", 10), ("async", 20)]
    assert sorted(os.listdir(tmp_path)) == ["acounter", "counter"]


def test_multi_asset_self_dependency_reads_its_first_output(tmp_path: Path) -> None:
    """rivers 0.6.2 loads a multi-asset's previous value as its first output, through that output's handler."""
    seen: list[Any] = []

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1", io_handler=FileHandler(root=str(tmp_path))),
                                      rs.AssetDef("m2")], name="mm")
    def mm(self: rs.SelfDependency[int]) -> dict[str, int]:
        seen.append(self.get_inner())
        return {"m1": (self.get_inner() or 0) + 1, "m2": 0}

    repo = make_repo([mm])
    assert repo.materialize().success and repo.materialize().success
    assert seen == [None, 1]


def test_self_dependency_other_load_errors_fail_the_step() -> None:
    """Deliberate difference: rivers 0.6.2 turns any load error into None (a corrupt or unreadable previous
    value would silently restart the asset's history); only 'not there yet' means a first run here."""

    class Unreadable(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None: ...

        def load_input(self, context: rs.InputContext) -> Any:
            raise PermissionError("denied")

    @rs.Asset(io_handler=Unreadable())
    def guarded(self: rs.SelfDependency[int]) -> int:
        return 1

    result = make_repo([guarded]).materialize(raise_on_error=False)
    assert result.failed_assets == [("guarded", "PermissionError: denied")]


# -- Backoff and retries -----------------------------------------------------------------------------
def test_fixed_schedule_delays_and_past_its_end() -> None:
    """rivers 0.6.2 measured: fixed([0.1, 0.4]) waits 0.1, 0.4, 0.4, 0.4, 0.4 over five retries."""
    fixed = rs.Backoff.fixed([1.0, 2.5])
    assert [fixed.delay(n) for n in (1, 2, 3, 10)] == [1.0, 2.5, 2.5, 2.5]
    assert rs.Backoff.fixed((3, 1)).schedule == (3.0, 1.0)
    assert rs.Backoff.fixed([-1.0]).delay(1) == 0.0  # rivers: 0ns
    assert rs.RetryPolicy(4, backoff=rs.Backoff.fixed([0.5, 0.1])).delay(4) == 0.1


def test_the_run_state_follows_a_fixed_schedule() -> None:
    state = diamond(rs.RetryPolicy(max_retries=4, backoff=rs.Backoff.fixed([3.0, 1.0])))
    step, _ = run_to(state, "root")
    delays = [state.retry_delay(step, fail(step, n, ValueError("x"))) for n in (1, 2, 3, 4, 5)]
    assert delays == [3.0, 1.0, 1.0, 1.0, None]


def test_fixed_schedule_retries_in_a_run() -> None:
    calls: list[int] = []

    @rs.Asset(retry=rs.RetryPolicy(3, backoff=rs.Backoff.fixed([0.01, 0.02])))
    def third_time() -> int:
        calls.append(1)
        if len(calls) < 4:
            raise ValueError("not yet")
        return len(calls)

    repo = make_repo([third_time])
    assert repo.materialize().success and repo.load_node("third_time") == 4


@pytest.mark.parametrize(("schedule", "error", "message"), [
    ([], rs.ConfigurationError, "Backoff.fixed requires a non-empty schedule"),
    (3.0, TypeError, "Backoff.fixed takes a list of delays in seconds, got float"),
    (["a"], TypeError, "schedule entries must be numbers of seconds, got 'a'"),
    ([math.inf], rs.ConfigurationError, "schedule entries must be finite, got inf"),  # rivers panics
])
def test_fixed_schedule_refused(schedule: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        rs.Backoff.fixed(schedule)


def test_fixed_takes_no_max_delay() -> None:
    with pytest.raises(TypeError, match="max_delay"):
        rs.Backoff.fixed([1.0], max_delay=2.0)  # type: ignore[call-arg]


def test_fixed_schedule_jitter_stays_within_its_fraction() -> None:
    backoff = rs.Backoff.fixed([2.0], jitter=0.5)
    assert all(1.0 <= backoff.delay(n) <= 3.0 for n in range(1, 50))


FACTORIES = {
    "constant": lambda j: rs.Backoff.constant(1.0, jitter=j),
    "linear": lambda j: rs.Backoff.linear(1.0, jitter=j),
    "exponential": lambda j: rs.Backoff.exponential(1.0, jitter=j),
    "fixed": lambda j: rs.Backoff.fixed([1.0], jitter=j),
}


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize(("jitter", "shown"), [(1.5, "1.5"), (-0.1, "-0.1"), (2, "2"), (1.0000001, "1.0000001"),
                                               (math.nan, "NaN")])
def test_jitter_outside_zero_one_is_refused(factory: str, jitter: float, shown: str) -> None:
    """rivers 0.6.2's message for every factory, e.g. `jitter must be between 0.0 and 1.0, got 1.5`."""
    with pytest.raises(rs.ConfigurationError) as caught:
        FACTORIES[factory](jitter)
    assert str(caught.value) == f"jitter must be between 0.0 and 1.0, got {shown}"


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@pytest.mark.parametrize("jitter", [0, 0.0, 0.25, 1.0])
def test_jitter_inside_zero_one_is_accepted(factory: str, jitter: float) -> None:
    assert FACTORIES[factory](jitter).jitter == jitter


def test_a_fixed_schedule_travels_in_a_spec() -> None:
    policy = rs.RetryPolicy(3, backoff=rs.Backoff.fixed([0.5, 2.0], jitter=0.1), retry_on=[KeyError])
    spec = RetrySpec.model_validate_json(retry_spec(policy, "step").model_dump_json())
    rebuilt = _retry_policy(spec, "step")
    assert rebuilt.backoff == policy.backoff and rebuilt.backoff is not None
    assert rebuilt.backoff.schedule == (0.5, 2.0) and rebuilt.max_retries == 3
    with pytest.raises(rs.ConfigurationError, match="got 3"):  # a forged spec cannot smuggle a bad jitter in
        _retry_policy(RetrySpec(max_retries=1, retry_on="all", backoff={"kind": "constant", "base": 1, "jitter": 3}),
                      "step")


def test_escalation_is_accepted_and_inert_outside_kubernetes() -> None:
    calls: list[int] = []
    escalate = rs.ComputeEscalation(max_memory="4Gi")

    @rs.Asset(retry=rs.RetryPolicy(1, escalate=escalate))
    def once_more() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("first attempt")
        return 5

    repo = make_repo([once_more])
    assert repo.materialize().success and repo.load_node("once_more") == 5
    assert rs.RetryPolicy(1, escalate=escalate).escalate is escalate
    assert {r.name for r in rs.FailureReason} >= {"ERROR", "OUT_OF_MEMORY", "TIMEOUT", "INFRASTRUCTURE", "CANCELLED"}


# -- Hooks run where the step runs -----------------------------------------------------------------------
def touch_marker(hc: rs.HookContext[Any]) -> None:
    """Leaves `<asset>-<hook_type>-<pid>` in the directory named by the output's metadata."""
    assert hc.metadata is not None
    Path(hc.metadata["dir"], f"{hc.asset_name}-{hc.hook_type}-{os.getpid()}").touch()


def test_multi_asset_hooks_fire_per_output_in_a_parallel_worker(tmp_path: Path) -> None:
    hooks = [rs.Hook.success(touch_marker), rs.Hook.failure(touch_marker)]
    store = rs.PickleIOHandler(store=LocalStore(str(tmp_path / "store"), mkdir=True))  # not process-local
    defs = [rs.AssetDef(name, io_handler=store, metadata={"dir": str(tmp_path)}) for name in ("p1", "p2")]

    @rs.Asset.from_multi(output_defs=defs, name="pair", hooks=hooks)
    def pair() -> dict[str, int]:
        return {"p1": 1, "p2": 2}

    repo = rs.CodeRepository([pair], default_executor=rs.Executor.parallel(max_workers=1))
    assert repo.materialize().success
    markers = sorted(name.rsplit("-", 1) for name in os.listdir(tmp_path) if name != "store")
    assert [kind for kind, _ in markers] == ["p1-success", "p2-success"]
    assert all(int(pid) != os.getpid() for _, pid in markers)  # the hooks ran in the worker, with the step
