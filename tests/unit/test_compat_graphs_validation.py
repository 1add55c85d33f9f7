"""Graph bodies and validation messages as rivers 0.6.2 has them (issue 10 items 1, 7; from_graph deps of 6).

Each expectation was observed with rivers 0.6.2 (the cases are named in the tests). Where rivers
loses the graph's value (a body returning nothing), we follow the documented intent instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.unit.conftest import make_repo

# -- module-level definitions: parallel workers import them by reference ---------------------------


@rs.Asset
def numbers() -> list[int]:
    return [1, 2, 3]


@rs.Task
def double(xs: list[int]) -> list[int]:
    return [x * 2 for x in xs]


@rs.Task
def total(xs: list[int]) -> int:
    return sum(xs)


@rs.Task
def marker() -> int:
    return 7


@rs.Task
def size(xs: list[int]) -> int:
    return len(xs)


@rs.Asset.from_graph()
def called() -> int:
    nums = numbers()
    return total(double(nums))


@rs.Asset.from_graph()
def returns_nothing(numbers: list[int]):  # type: ignore[no-untyped-def]
    total(double(numbers))


@rs.Asset.from_graph()
def returns_ellipsis(numbers: list[int]):  # type: ignore[no-untyped-def]
    total(double(numbers))
    return ...


@rs.Asset.from_graph()
def returns_upstream(numbers: list[int]) -> list[int]:
    double(numbers)
    return numbers


@rs.Asset.from_graph()
def returns_called() -> list[int]:
    return numbers()  # type: ignore[no-any-return]


@rs.Asset.from_graph()
def ordered() -> int:
    first = marker()
    return size(double(numbers()), first)


@rs.Asset.from_graph(metadata={"rivers/executor": "parallel", "rivers/node/executor": "in_process"})
def fused() -> int:
    first = marker()
    return total(numbers(), first)


@rs.Asset
def downstream(called: int, returns_nothing: int, returns_upstream: list[int]) -> str:
    return f"{called}/{returns_nothing}/{returns_upstream}"


GRAPHS = [numbers, called, returns_nothing, returns_ellipsis, returns_upstream, returns_called, ordered, fused,
          downstream]


def graph_repo(executor: rs.Executor, tmp_path: Path) -> rs.CodeRepository:
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path), mkdir=True))
    return rs.CodeRepository(GRAPHS, default_executor=executor, default_io_handler=handler)  # type: ignore[arg-type]


# -- 1. graph bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", [pytest.param(rs.Executor.in_process(), id="in_process"),
                                      pytest.param(rs.Executor.parallel(2), id="parallel")])
def test_graph_bodies_on_every_executor(executor: rs.Executor, tmp_path: Path) -> None:
    repo = graph_repo(executor, tmp_path)
    result = repo.materialize()
    assert result.success, result.failed_assets
    got = {name: repo.load_node(name) for name in
           ("called", "returns_nothing", "returns_ellipsis", "returns_upstream", "returns_called", "ordered", "fused")}
    assert got == {"called": 12, "returns_nothing": 12, "returns_ellipsis": 12, "returns_upstream": [1, 2, 3],
                   "returns_called": [1, 2, 3], "ordered": 3, "fused": 6}
    assert repo.load_node("downstream") == "12/12/[1, 2, 3]"
    assert repo.load_node("called/double") == [2, 4, 6]


def test_a_called_asset_is_an_upstream_like_a_parameter() -> None:
    # rivers 0.6.2 (case "call"): materialized ['numbers', 'g/double', 'g/total', 'g'], g = 12
    repo = make_repo([numbers, called])
    result = repo.materialize()
    assert result.materialized_assets == ["numbers", "called/double", "called/total", "called"]
    assert called.upstream_names == ["numbers"]
    assert repo.materialize(["called"], include_upstream=True).materialized_assets[0] == "numbers"


def test_a_body_returning_nothing_or_ellipsis_has_its_last_tasks_value() -> None:
    # rivers 0.6.2 runs the same steps (cases "none", "ellipsis") but loses the value (downstream: KeyError 'g');
    # the issue documents the intent: the graph's value is its last task's
    repo = make_repo([numbers, returns_nothing, returns_ellipsis])
    result = repo.materialize()
    assert "returns_nothing/total" in result.materialized_assets
    assert repo.load_node("returns_nothing") == repo.load_node("returns_nothing/total") == 12
    assert repo.load_node("returns_ellipsis") == 12


def test_a_body_returning_its_upstream_writes_that_value_after_its_tasks() -> None:
    # rivers 0.6.2 (cases "param", "param_only", "call_ret"): ['numbers', 'g/double', 'g', 'down'], g = [1, 2, 3]
    repo = make_repo([numbers, returns_upstream, returns_called])
    done = repo.materialize().materialized_assets
    assert sorted(done) == ["numbers", "returns_called", "returns_upstream", "returns_upstream/double"]
    assert done.index("returns_upstream/double") < done.index("returns_upstream")
    assert repo.load_node("returns_upstream") == [1, 2, 3] and repo.load_node("returns_called") == [1, 2, 3]


def test_extra_output_arguments_are_ordering_dependencies() -> None:
    # rivers 0.6.2 (case "extra_pos"): ['numbers', 'g/side', 'g/double', 'g/after', 'g']
    order: list[str] = []

    @rs.Task
    def first() -> int:
        order.append("first")
        return 0

    @rs.Task
    def second(xs: list[int]) -> int:
        order.append("second")
        return len(xs)

    @rs.Asset.from_graph()
    def g(numbers: list[int]) -> int:
        done = first()
        return second(numbers, done)  # type: ignore[call-arg]

    @rs.Asset.from_graph()
    def by_keyword(numbers: list[int]) -> int:
        return second(numbers, after=first())  # type: ignore[call-arg]

    repo = make_repo([numbers, g, by_keyword])
    result = repo.materialize(["numbers", "g"])
    assert result.materialized_assets == ["g/first", "numbers", "g/second", "g"] and order == ["first", "second"]
    assert repo.load_node("g") == 3
    node = next(n for n in by_keyword.nodes if n.name == "by_keyword/second")
    assert node.after == ["by_keyword/first"]


def test_extra_constant_arguments_and_called_asset_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="extra arguments must be other tasks' outputs"):
        @rs.Asset.from_graph()
        def g(numbers: list[int]) -> int:
            return total(numbers, 5)  # type: ignore[call-arg,no-any-return]

    with pytest.raises(TypeError, match="Asset 'numbers' called in the body of graph 'h' takes no arguments"):
        @rs.Asset.from_graph()
        def h() -> int:
            return total(numbers(1))  # type: ignore[no-any-return]


def test_bodies_that_give_no_value_are_refused_when_defined() -> None:
    with pytest.raises(rs.AssetDefinitionError, match="calls no task"):
        @rs.Asset.from_graph()
        def empty() -> None:
            pass

    with pytest.raises(rs.AssetDefinitionError, match="got int"):
        @rs.Asset.from_graph()
        def constant() -> int:
            return 5

    with pytest.raises(TypeError, match="must be collected"):
        @rs.Asset.from_graph()
        def uncollected(numbers: list[int]) -> None:
            numbers.map(double)  # type: ignore[attr-defined]


def test_calling_an_asset_outside_a_graph_body() -> None:
    # rivers 0.6.2: AssetDefinitionError "asset 'numbers' already wraps a function; call it only inside an
    # Asset.from_graph body"
    with pytest.raises(rs.AssetDefinitionError, match=r"call it only inside an Asset\.from_graph body"):
        numbers()
    assert numbers._asset_fn() == [1, 2, 3]


def test_a_called_asset_missing_from_the_repository_is_unresolved() -> None:
    # rivers 0.6.2 (case "missing"): GraphValidationError "Asset 'g': unresolved input 'numbers'"
    with pytest.raises(rs.GraphValidationError, match="unresolved input 'numbers'"):
        make_repo([called]).validate()


def test_a_called_asset_can_be_mapped() -> None:
    @rs.Task
    def inc(x: int) -> int:
        return x + 1

    @rs.Asset.from_graph()
    def mapped() -> list[int]:
        return numbers().map(inc).collect()  # type: ignore[no-any-return]

    repo = make_repo([numbers, mapped])
    assert repo.materialize().success and repo.load_node("mapped") == [2, 3, 4]


# -- from_graph(deps=...) --------------------------------------------------------------------------


def test_graph_deps_order_the_graph_after_them() -> None:
    # rivers 0.6.2 (case "dep"): ['numbers', 'other', 'g/total', 'g']; without 'other' selected it still runs
    order: list[str] = []

    @rs.Asset
    def other() -> int:
        order.append("other")
        return 5

    @rs.Task
    def seven() -> int:
        order.append("seven")
        return 7

    @rs.Asset.from_graph(deps=[rs.AssetDef.dep("other")])
    def g() -> int:
        return seven()  # type: ignore[no-any-return]

    repo = make_repo([g, other])
    assert repo.materialize().success and order == ["other", "seven"]
    assert [d.name for d in g.deps] == ["other"]
    assert repo.materialize(["g"]).materialized_assets == ["g/seven", "g"]
    with pytest.raises(rs.GraphValidationError, match="depends on 'other' which is not in the job"):
        make_repo([g, other], jobs=[rs.Job("j", [g])]).validate()


@pytest.mark.parametrize(("deps", "message"), [
    ([rs.AssetDef("other")], "'AssetDef' object is not an instance of 'DepDef'"),
    (["other"], "'str' object is not an instance of 'DepDef'"),
    ([numbers], "'SingleAsset' object is not an instance of 'DepDef'"),
    (rs.AssetDef.dep("other"), "object is not an instance of 'Sequence'"),
])
def test_graph_deps_are_checked_as_rivers_checks_them(deps: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        @rs.Asset.from_graph(deps=deps)
        def g() -> int:
            return marker()  # type: ignore[no-any-return]


def test_graph_deps_missing_self_and_cyclic() -> None:
    @rs.Asset.from_graph(deps=[rs.AssetDef.dep("nope")])
    def missing() -> int:
        return marker()  # type: ignore[no-any-return]

    with pytest.raises(rs.GraphValidationError, match="unresolved input 'nope'"):
        make_repo([missing]).validate()

    @rs.Asset.from_graph(deps=[rs.AssetDef.dep("g")])
    def g() -> int:
        return marker()  # type: ignore[no-any-return]

    with pytest.raises(rs.GraphValidationError) as info:
        make_repo([g]).validate()
    assert str(info.value) == (
        "Asset 'g': depends on itself; use SelfDependency[T] to reference an asset's own previous output"
    )

    @rs.Asset
    def late(cyclic: int) -> int:
        return cyclic

    @rs.Asset.from_graph(deps=[rs.AssetDef.dep("late")])
    def cyclic() -> int:
        return marker()  # type: ignore[no-any-return]

    with pytest.raises(rs.GraphValidationError) as info:
        make_repo([late, cyclic]).validate()
    assert str(info.value) == "Cycle detected in asset graph: late -> cyclic -> late"


# -- 7. cycles and self-dependencies ---------------------------------------------------------------


def chain(spec: str) -> list[rs.Asset]:
    """`"a:c b:a"`: asset a depends on c, b on a (the notation of the cases run against rivers 0.6.2)."""
    assets = []
    for item in spec.split():
        name, _, deps = item.partition(":")
        namespace: dict[str, Any] = {}
        params = ", ".join(d for d in deps.split(",") if d)
        exec(f"def {name}({params}):\n    return 1", namespace)  # a test's own fixed source
        assets.append(rs.Asset(namespace[name]))
    return assets


@pytest.mark.parametrize(("spec", "message"), [
    ("a:b b:a", "Cycle detected in asset graph: b -> a -> b"),
    ("b:a a:b", "Cycle detected in asset graph: b -> a -> b"),
    ("a:c b:a c:b", "Cycle detected in asset graph: b -> c -> a -> b"),
    ("p:q q:r r:p", "Cycle detected in asset graph: r -> q -> p -> r"),
    ("z:y y:x x:z w:", "Cycle detected in asset graph: y -> z -> x -> y"),
    ("a: b:a c:b,d d:c", "Cycle detected in asset graph: d -> c -> d"),
    ("a:b,c b:a c:a", "Cycle detected in asset graph: c -> b -> a -> c"),
    ("a:c,b b:a c:a", "Cycle detected in asset graph: b -> c -> a -> b"),
    ("x:a a:x,y y:a", "Cycle detected in asset graph: y -> x -> a -> y"),
    ("m:n n:m a:b b:a", "2 cycles detected in asset graph:\n  1. b -> a -> b\n  2. n -> m -> n"),
])
def test_cycles_are_named_as_rivers_names_them(spec: str, message: str) -> None:
    with pytest.raises(rs.GraphValidationError) as info:
        make_repo(chain(spec)).validate()
    assert str(info.value) == message


def test_cycles_through_tasks_and_multi_asset_outputs() -> None:
    @rs.Task
    def t1(t2: int) -> int:
        return t2

    @rs.Task
    def t2(t1: int) -> int:
        return t1

    with pytest.raises(rs.GraphValidationError, match=r"^Cycle detected in asset graph: t2 -> t1 -> t2$"):
        make_repo([], tasks=[t1, t2]).validate()

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1"), rs.AssetDef("m2")])
    def m(z: int) -> dict[str, int]:
        return {"m1": z, "m2": z}

    @rs.Asset
    def z(m1: int) -> int:
        return m1

    with pytest.raises(rs.GraphValidationError, match=r"^Cycle detected in asset graph: z -> m1 -> z$"):
        make_repo([m, z]).validate()


def test_an_asset_that_depends_on_itself_gets_the_self_dependency_hint() -> None:
    hint = "depends on itself; use SelfDependency[T] to reference an asset's own previous output"

    @rs.Asset
    def a(a: int) -> int:
        return a

    @rs.Asset(deps=[rs.AssetDef.dep("d")])
    def d() -> int:
        return 1

    @rs.Asset(name="x")
    def renamed(x: int) -> int:
        return x

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("m1"), rs.AssetDef("m2")])
    def m(m1: int) -> dict[str, int]:
        return {"m1": 1, "m2": 2}

    for asset, name in [(a, "a"), (d, "d"), (renamed, "x"), (m, "m1")]:
        with pytest.raises(rs.GraphValidationError) as info:
            make_repo([asset]).validate()
        assert str(info.value) == f"Asset '{name}': {hint}"

    @rs.Asset
    def counter(self: rs.SelfDependency[int]) -> int:
        return (self.get_inner() or 0) + 1

    make_repo([counter]).validate()  # the SelfDependency form is no edge


# -- 7. jobs ---------------------------------------------------------------------------------------


@rs.Asset
def a() -> int:
    return 1


@rs.Asset
def b(a: int) -> int:
    return a + 1


@rs.Asset(deps=[rs.AssetDef.dep("a")])
def after_a() -> int:
    return 3


@rs.Asset(io_handler=rs.InMemoryIOHandler())
def kept() -> int:
    return 1


@rs.Asset
def reads_kept(kept: int) -> int:
    return kept


@rs.Task
def t(a: int) -> int:
    return a


@rs.Asset.from_graph()
def in_graph(a: int) -> int:
    return t(a)  # type: ignore[no-any-return]


def job_error(job: rs.Job, **kwargs: Any) -> str:
    repo = make_repo([a, b, after_a, kept, reads_kept, in_graph], jobs=[job], **kwargs)
    with pytest.raises(rs.exceptions.GraphValidationError) as info:
        repo.validate()
    return str(info.value)


def test_job_messages() -> None:
    suffix = "which is not in the job. Add it to the job or set allow_incomplete_deps=True"
    assert job_error(rs.Job("j", [b])) == f"Job 'j': node 'b' depends on 'a' {suffix}"
    assert job_error(rs.Job("j", [after_a])) == f"Job 'j': node 'after_a' depends on 'a' {suffix}"
    assert job_error(rs.Job("j", [reads_kept])) == f"Job 'j': node 'reads_kept' depends on 'kept' {suffix}"
    assert job_error(rs.Job("j", [in_graph])) == f"Job 'j': node 'in_graph' depends on 'a' {suffix}"


def test_allow_incomplete_deps_needs_an_io_handler_to_load_from() -> None:
    no_handler = "which is not in the job and has no io_handler"
    assert job_error(rs.Job("j", [b], allow_incomplete_deps=True)) == f"Job 'j': node 'b' depends on 'a' {no_handler}"
    assert job_error(rs.Job("j", [in_graph], allow_incomplete_deps=True)) == (
        f"Job 'j': node 'in_graph/t' depends on 'a' {no_handler}"
    )
    ok = [rs.Job("dep_only", [after_a], allow_incomplete_deps=True),  # an ordering-only dep loads nothing
          rs.Job("handled", [reads_kept], allow_incomplete_deps=True)]
    make_repo([a, after_a, kept, reads_kept], jobs=ok).validate()
    with pytest.raises(rs.GraphValidationError, match="node 'b' depends on 'a' which is not in the job and has no"):
        make_repo([a, b]).materialize(["b"])


def test_a_job_naming_an_unknown_node_and_a_job_of_names() -> None:
    @rs.Asset
    def elsewhere() -> int:
        return 1

    repo = make_repo([a], jobs=[rs.Job("j", [elsewhere])])
    with pytest.raises(rs.NodeNotFoundError) as info:
        repo.validate()
    assert str(info.value) == "Job 'j': node 'elsewhere' not found in repository"
    with pytest.raises(rs.NodeNotFoundError, match="Job 'nope' not found"):
        make_repo([a]).get_job("nope")
    with pytest.raises(rs.GraphValidationError, match="Job assets must be Asset, Task, or BashTask instances"):
        rs.Job("j", ["a"])


# -- 7. IO handlers --------------------------------------------------------------------------------

IO_MESSAGE = "io_handler must be a BaseIOHandler subclass instance or a string resource reference"


class NotAHandler(rs.Resource):
    x: int = 1


class Duck:
    def handle_output(self, context: Any, obj: Any) -> None: ...

    def load_input(self, context: Any) -> Any: ...


class DuckResource(rs.Resource):
    def handle_output(self, context: Any, obj: Any) -> None: ...

    def load_input(self, context: Any) -> Any: ...


@pytest.mark.parametrize("value", [42, object(), Duck(), NotAHandler(), rs.InMemoryIOHandler])
def test_a_wrong_io_handler_is_refused_where_it_is_defined(value: Any) -> None:
    definitions = [
        lambda: rs.Asset(io_handler=value)(lambda: 1),
        lambda: rs.Task(io_handler=value)(lambda: 1),
        lambda: rs.Asset.from_multi(output_defs=[rs.AssetDef("x")], io_handler=value)(lambda: {"x": 1}),
        lambda: rs.AssetDef("x", io_handler=value),
        lambda: rs.AssetDef.input("x", io_handler=value),
        lambda: rs.Asset.from_graph(io_handler=value)(lambda: marker()),
        lambda: rs.Asset.from_graph(node_io_handler=value)(lambda: marker()),
        lambda: rs.Asset.external(name="e", io_handler=value),
        lambda: rs.BashTask("b", "true", io_handler=value),
    ]
    for define in definitions:
        with pytest.raises(rs.AssetDefinitionError, match=IO_MESSAGE):
            define()


def test_a_resource_used_as_io_handler_must_implement_the_protocol() -> None:
    @rs.Asset(io_handler="h")
    def keyed() -> int:
        return 1

    @rs.Task(io_handler="h")
    def task_keyed() -> int:
        return 1

    @rs.Asset.from_multi(output_defs=[rs.AssetDef("o", io_handler="h")])
    def multi() -> dict[str, int]:
        return {"o": 1}

    @rs.Asset.from_graph(io_handler="h")
    def graph_keyed() -> int:
        return marker()  # type: ignore[no-any-return]

    protocol = "io_handler references resource 'h' which does not implement the IOHandler protocol"
    cases: list[tuple[list[Any], list[Any], str]] = [
        ([keyed], [], "Asset 'keyed'"), ([], [task_keyed], "Task 'task_keyed'"), ([multi], [], "Asset 'o'"),
        ([graph_keyed], [], "Asset 'graph_keyed'"),
    ]
    for assets, tasks, owner in cases:
        for resource in (NotAHandler(), DuckResource()):  # rivers refuses a duck-typed resource too
            repo = make_repo(assets, tasks=tasks, resources={"h": resource})
            with pytest.raises(rs.AssetDefinitionError) as info:
                repo.validate()
            assert str(info.value).startswith(f"{owner}: {protocol} (handle_output + load_input)")
    with pytest.raises(rs.AssetDefinitionError) as missing:
        make_repo([keyed]).materialize()
    assert str(missing.value) == "Asset 'keyed': io_handler references resource 'h' which is not in resources"


# -- 7. BashTask -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    (("t", []), {}, rs.TaskDefinitionError, "command list must not be empty"),
    (("t", 42), {}, TypeError, "command must be a str or list\\[str\\]"),
    (("t", None), {}, TypeError, "command must be a str or list\\[str\\]"),
    (("t", ["echo", 1]), {}, TypeError, "command must be a str or list\\[str\\]"),
    ((1, "echo hi"), {}, TypeError, "'int' object is not an instance of 'str'"),
    (("t", "echo hi"), {"env": {"A": 1}}, TypeError, "'int' object is not an instance of 'str'"),
    (("t", "echo hi"), {"env": ["A"]}, TypeError, "'list' object is not an instance of 'dict'"),
    (("t", "echo hi"), {"cwd": 1}, TypeError, "'int' object is not an instance of 'str'"),
])
def test_bash_task_command_checks(args: tuple[Any, ...], kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        rs.BashTask(*args, **kwargs)


def test_bash_task_runs_tuples_and_reports_failures_as_rivers() -> None:
    ok = rs.BashTask("tup", ("echo", "tup"))
    failing = rs.BashTask("fails", ["sh", "-c", "echo err >&2; exit 2"])
    missing = rs.BashTask("missing", ["rivers-no-such-program-xyz"])
    result = make_repo([], tasks=[ok, failing, missing]).materialize(raise_on_error=False)
    failed = dict(result.failed_assets)
    assert failed["fails"] == "OSError: Command failed with exit status: 2: err"
    assert failed["missing"].startswith("OSError: No such file or directory (os error 2)")
    assert "tup" not in failed


# -- 7. validate() and Resource.setup() ------------------------------------------------------------


def test_validate_never_sets_a_resource_up() -> None:
    journal: list[str] = []

    class Tracked(rs.Resource):
        def setup(self) -> None:
            journal.append("setup")

    @rs.Asset
    def uses(res: Tracked) -> int:
        return 1

    repo = make_repo([uses], resources={"res": Tracked()})
    repo.validate()
    repo.validate()
    assert journal == []  # rivers 0.6.2: validate() twice, no setup
    repo.materialize()
    assert journal == ["setup"]  # the first run does set it up, once
    repo.materialize()
    assert journal == ["setup"]
