"""Run semantics (API.md §4): raise_on_error both ways, skip-on-failure, independent branches."""

from __future__ import annotations

from typing import Any

import pytest

import rivers as rs
from tests.unit.conftest import make_repo


class BoomError(Exception):
    """A user exception defined at module level."""


def branching_pipeline(calls: list[str]) -> list[Any]:
    """root -> bad -> after_bad -> last ; root -> good (independent of bad)."""

    @rs.Asset
    def root() -> int:
        calls.append("root")
        return 1

    @rs.Asset
    def bad(root: int) -> int:
        calls.append("bad")
        raise BoomError("it broke")

    @rs.Asset
    def after_bad(bad: int) -> int:
        calls.append("after_bad")
        return bad

    @rs.Asset
    def last(after_bad: int, root: int) -> int:
        calls.append("last")
        return after_bad

    @rs.Asset
    def good(root: int) -> int:
        calls.append("good")
        return root + 1

    return [root, bad, after_bad, last, good]


def test_raise_on_error_false_reports_failures_and_skips() -> None:
    calls: list[str] = []
    repo = make_repo(branching_pipeline(calls))
    result = repo.materialize(raise_on_error=False)
    assert result.success is False
    assert sorted(calls) == ["bad", "good", "root"]
    assert dict(result.failed_assets) == {
        "bad": "BoomError: it broke",
        "after_bad": "ExecutionError: Skipped: upstream dependency failed",
        "last": "ExecutionError: Skipped: upstream dependency failed",
    }
    assert set(result.materialized_assets) == {"root", "bad", "good", "after_bad", "last"}  # skipped ones too
    assert repo.load_node("good") == 2


def test_raise_on_error_true_reraises_original_type_after_whole_plan() -> None:
    calls: list[str] = []
    repo = make_repo(branching_pipeline(calls))
    with pytest.raises(BoomError, match="it broke"):
        repo.materialize()
    assert "good" in calls  # the independent branch still ran
    assert "after_bad" not in calls and "last" not in calls
    assert repo.load_node("good") == 2


def test_builtin_exception_type_is_kept() -> None:
    @rs.Asset
    def div() -> float:
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        make_repo([div]).materialize()
    result = make_repo([div]).materialize(raise_on_error=False)
    assert result.failed_assets == [("div", "ZeroDivisionError: division by zero")]


def test_failure_message_uses_the_bare_class_name_of_a_local_exception() -> None:
    class LocalError(Exception):
        pass

    @rs.Asset
    def fails() -> int:
        raise LocalError("local")

    result = make_repo([fails]).materialize(raise_on_error=False)
    assert result.failed_assets == [("fails", "LocalError: local")]


def test_selection_runs_only_what_is_selected() -> None:
    calls: list[str] = []
    repo = make_repo(branching_pipeline(calls))
    result = repo.materialize(["root", "good"])
    assert result.materialized_assets == ["root", "good"]
    assert sorted(calls) == ["good", "root"]
    result = repo.materialize("root")
    assert result.materialized_assets == ["root"]


def test_include_upstream() -> None:
    calls: list[str] = []
    repo = make_repo(branching_pipeline(calls))
    result = repo.materialize(["good"], include_upstream=True)
    assert sorted(result.materialized_assets) == ["good", "root"]


def test_run_id_override_and_context_run_id() -> None:
    seen: list[str] = []

    @rs.Asset
    def where(context: rs.AssetExecutionContext) -> int:
        seen.append(context.run_id)
        return 1

    result = make_repo([where]).materialize(run_id_override="my-run")
    assert result.run_id == "my-run" and seen == ["my-run"]


def test_topological_order_in_process() -> None:
    order: list[str] = []

    @rs.Asset
    def c(b: int) -> int:
        order.append("c")
        return b

    @rs.Asset
    def b(a: int) -> int:
        order.append("b")
        return a

    @rs.Asset
    def a() -> int:
        order.append("a")
        return 1

    result = make_repo([c, b, a]).materialize()
    assert order == ["a", "b", "c"]
    assert result.materialized_assets == ["a", "b", "c"]


def test_asset_def_input_overrides_how_one_input_loads() -> None:
    class Doubling(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            raise AssertionError("an input override never writes")

        def load_input(self, context: rs.InputContext) -> Any:
            return f"loaded {context.asset_name} for {context.downstream_asset}"

    @rs.Asset
    def source() -> str:
        return "plain"

    @rs.Asset(deps=[rs.AssetDef.input("source", io_handler=Doubling())])
    def overridden(source: str) -> str:
        return source

    @rs.Asset
    def normal(source: str) -> str:
        return source

    repo = make_repo([source, overridden, normal])
    repo.materialize()
    assert repo.load_node("overridden") == "loaded source for overridden"
    assert repo.load_node("normal") == "plain"


def test_asset_def_dep_orders_without_loading() -> None:
    order: list[str] = []

    @rs.Asset(deps=[rs.AssetDef.dep("first")])
    def second() -> str:
        order.append("second")
        return "s"

    @rs.Asset
    def first() -> str:
        order.append("first")
        return "f"

    repo = make_repo([second, first])
    result = repo.materialize()
    assert order == ["first", "second"]
    assert result.materialized_assets == ["first", "second"]


def test_dep_failure_skips_the_dependent() -> None:
    @rs.Asset
    def first() -> str:
        raise ValueError("no")

    @rs.Asset(deps=[rs.AssetDef.dep("first")])
    def second() -> str:
        return "s"

    result = make_repo([first, second]).materialize(raise_on_error=False)
    assert result.failed_assets == [
        ("first", "ValueError: no"),
        ("second", "ExecutionError: Skipped: upstream dependency failed"),
    ]


def test_parameters_with_defaults_and_varargs_are_not_dependencies() -> None:
    @rs.Asset
    def loose(x: int = 5, *args: Any, **kwargs: Any) -> int:
        return x

    repo = make_repo([loose])
    repo.materialize()
    assert repo.load_node("loose") == 5


def test_self_dependency_none_first_then_previous_value() -> None:
    seen: list[Any] = []

    @rs.Asset
    def counter(self: rs.SelfDependency[int]) -> int:
        previous = self.get_inner()
        seen.append(previous)
        return (previous or 0) + 1

    repo = make_repo([counter])
    repo.materialize()
    repo.materialize()
    assert seen == [None, 1]
    assert repo.load_node("counter") == 2


def test_return_type_validation_names_the_asset() -> None:
    @rs.Asset
    def typed() -> int:
        return "nope"  # type: ignore[return-value]

    with pytest.raises(rs.AssetOutputValidationError, match="typed"):
        make_repo([typed]).materialize()
    result = make_repo([typed]).materialize(raise_on_error=False)
    assert result.failed_assets[0][0] == "typed"
    assert result.failed_assets[0][1].startswith("AssetOutputValidationError: ")


def test_output_wrapping_passes_return_type_check() -> None:
    @rs.Asset
    def wrapped() -> int:
        return rs.Output(7)  # type: ignore[return-value]

    @rs.Asset
    def optional() -> int | None:
        return None

    @rs.Asset
    def generic() -> list[int]:
        return [1]

    repo = make_repo([wrapped, optional, generic])
    assert repo.materialize().success
    assert repo.load_node("wrapped") == 7


def test_wrapped_wrong_type_is_still_rejected() -> None:
    @rs.Asset
    def wrapped_bad() -> int:
        return rs.Output("x")  # type: ignore[return-value]

    with pytest.raises(rs.AssetOutputValidationError, match="wrapped_bad"):
        make_repo([wrapped_bad]).materialize()


def test_closures_and_local_state_work_in_process() -> None:
    class Local:
        def __init__(self) -> None:
            self.hits = 0

    state = Local()

    @rs.Asset
    def closure() -> int:
        state.hits += 1
        return state.hits

    repo = make_repo([closure])
    repo.materialize()
    repo.materialize()
    assert state.hits == 2


def test_asset_def_input_metadata_reaches_the_input_context() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    class Loader(rs.BaseIOHandler):
        def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
            pass

        def load_input(self, context: rs.InputContext) -> Any:
            seen.append((context.downstream_asset or "", dict(context.asset_metadata)))
            return 1

    @rs.Asset(io_handler=Loader(), metadata={"owner": "up", "fmt": "pickle"})
    def up() -> int:
        return 1

    @rs.Asset(deps=[rs.AssetDef.input("up", metadata={"fmt": "csv"})])
    def meta_only(up: int) -> int:
        return up

    @rs.Asset(deps=[rs.AssetDef.input("up", io_handler=Loader())])
    def handler_only(up: int) -> int:
        return up

    @rs.Asset
    def plain(up: int) -> int:
        return up

    make_repo([up, meta_only, handler_only, plain]).materialize()
    assert dict(seen) == {
        "meta_only": {"owner": "up", "fmt": "csv"},
        "handler_only": {"owner": "up", "fmt": "pickle"},
        "plain": {"owner": "up", "fmt": "pickle"},
    }


def test_first_failure_is_the_one_reraised() -> None:
    @rs.Asset
    def fails_first() -> int:
        raise ValueError("first")

    @rs.Asset
    def fails_second() -> int:
        raise KeyError("second")

    with pytest.raises(ValueError, match="first"):
        make_repo([fails_first, fails_second]).materialize()


def test_executor_metadata_routes_a_step_in_process(tmp_path: Any) -> None:
    import os

    from obstore.store import LocalStore

    pids: list[int] = []

    # a handler other processes can read: only the metadata keeps this step in the coordinator
    @rs.Asset(metadata={"rivers/executor": "in_process"}, io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))))
    def pinned() -> int:
        pids.append(os.getpid())
        return 1

    repo = rs.CodeRepository([pinned], default_executor=rs.Executor.parallel(1))
    result = repo.materialize()
    assert pids == [os.getpid()]
    assert result.step_results["pinned"].pid == os.getpid()


def test_empty_selection_runs_nothing() -> None:
    calls: list[str] = []
    repo = make_repo(branching_pipeline(calls))
    result = repo.materialize([])
    assert result.success and result.materialized_assets == [] and calls == []


def test_results_are_listed_as_rivers_lists_them_whatever_the_repository_order() -> None:
    """rivers 0.6.2, measured: materialized_assets goes depth first over the names in order (each step after its
    upstreams) and lists skipped steps too; failures go by level, then name, and the first of them is raised."""
    @rs.Asset
    def z(y: int) -> int:
        return y

    @rs.Asset
    def y(x: int) -> int:
        return x

    @rs.Asset
    def x() -> int:
        return 1

    @rs.Asset
    def w() -> int:
        return 1

    assert make_repo([z, y, x, w]).materialize().materialized_assets == ["w", "x", "y", "z"]

    @rs.Asset
    def zz() -> int:
        return 1

    @rs.Asset
    def aa(zz: int) -> int:
        raise ValueError("x")

    @rs.Asset
    def mm() -> int:
        raise KeyError("k")

    @rs.Asset
    def bb(aa: int) -> int:
        return aa

    @rs.Asset
    def ab() -> int:
        raise TypeError("t")

    repo = make_repo([zz, mm, bb, aa, ab])
    result = repo.materialize(raise_on_error=False)
    assert result.materialized_assets == ["zz", "aa", "ab", "bb", "mm"]  # rivers 0.6.2 printed the same
    assert [name for name, _ in result.failed_assets] == ["ab", "mm", "aa", "bb"]
    with pytest.raises(TypeError, match="t"):  # level 0 before level 1, then by name: ab
        repo.materialize()
