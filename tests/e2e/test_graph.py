"""Graph assets and fan-out, end to end (issue 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.pipelines import graph_pipeline as gp

STORE: dict[str, Path] = {}  # the current test's directory, for the handler of parallel runs


def make_repo(assets: list[rs.Asset], executor: rs.Executor, **kwargs: object) -> rs.CodeRepository:
    """Under the parallel executor values are pickled to files, so that steps really leave the process."""
    kwargs.setdefault("resources", {"counters": gp.Counters(directory=str(STORE["dir"] / "counters"))})
    if isinstance(executor, rs.Executor.Parallel):
        store = LocalStore(str(STORE["dir"] / "values"), mkdir=True)
        kwargs.setdefault("default_io_handler", rs.PickleIOHandler(store))
    return rs.CodeRepository(assets, default_executor=executor, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def store(tmp_path: Path) -> Path:
    STORE["dir"] = tmp_path
    return tmp_path


@pytest.fixture(params=["in_process", "parallel"])
def executor(request: pytest.FixtureRequest) -> rs.Executor:
    return rs.Executor.in_process() if request.param == "in_process" else rs.Executor.parallel(2)


@pytest.fixture
def counters(tmp_path: Path) -> Path:
    return tmp_path / "counters"


def test_graph_value_internal_nodes_and_downstream(executor: rs.Executor) -> None:
    repo = make_repo([gp.base, gp.pipeline, gp.report], executor)
    result = repo.materialize()
    assert result.success
    assert result.materialized_assets == [
        "base", "pipeline/fetch", "pipeline/clean", "pipeline/total", "pipeline/add_base", "pipeline", "report",
    ]
    assert repo.load_node("pipeline/fetch") == [1, 2, 3, 4]
    assert repo.load_node("pipeline/clean") == [2, 3, 4]
    assert repo.load_node("pipeline") == 109
    assert repo.load_node("report") == "total=109"
    assert set(repo.assets) == {"base", "pipeline", "report"}
    assert isinstance(repo.assets["pipeline"], rs.GraphAsset)


def test_two_graphs_sharing_tasks_are_independent_steps(executor: rs.Executor) -> None:
    repo = make_repo([gp.base, gp.pipeline, gp.other_pipeline], executor)
    result = repo.materialize()
    assert result.success
    assert repo.load_node("pipeline/fetch") == [1, 2, 3, 4]
    assert repo.load_node("other_pipeline/fetch") == [1, 2, 3, 2]
    assert repo.load_node("other_pipeline") == 7


def test_selecting_a_graph_runs_its_internal_tasks(executor: rs.Executor) -> None:
    repo = make_repo([gp.other_pipeline, gp.independent], executor)
    result = repo.materialize(selection=["other_pipeline"])
    assert result.materialized_assets == [
        "other_pipeline/fetch", "other_pipeline/clean", "other_pipeline/total", "other_pipeline",
    ]


def test_graph_in_a_job(executor: rs.Executor) -> None:
    job = rs.Job("graphs", [gp.base, gp.pipeline], executor=executor)
    repo = make_repo([gp.base, gp.pipeline, gp.report], executor, jobs=[job])
    result = repo.get_job("graphs").execute()
    assert result.success
    assert "report" not in result.materialized_assets
    assert repo.load_node("pipeline") == 109


def test_failure_inside_a_graph_skips_its_downstream(executor: rs.Executor) -> None:
    repo = make_repo([gp.broken, gp.after_broken, gp.independent], executor)
    result = repo.materialize(raise_on_error=False)
    assert not result.success
    failed = dict(result.failed_assets)
    assert failed["broken/explode"] == "ValueError: cannot use [2, 3, 3]"
    assert failed["broken"] == "ExecutionError: Skipped: upstream dependency failed"
    assert failed["after_broken"] == "ExecutionError: Skipped: upstream dependency failed"
    assert "independent" in result.materialized_assets
    with pytest.raises(ValueError, match="cannot use"):
        repo.materialize()


def test_node_io_handler_writes_internal_tasks_and_io_handler_the_graph(tmp_path: Path) -> None:
    nodes = rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix="nodes")
    final = rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix="final")

    @rs.Asset.from_graph(name="stored", io_handler=final, node_io_handler=nodes)
    def stored() -> int:
        return gp.total(gp.clean(gp.fetch("abcd")))

    repo = make_repo([stored], rs.Executor.in_process())
    assert repo.materialize().success
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pkl"))
    assert files == ["final/stored.pkl", "nodes/stored/clean.pkl", "nodes/stored/fetch.pkl", "nodes/stored/total.pkl"]
    assert repo.io_handler_for_output("stored") is final
    assert repo.io_handler_for_output("stored/clean") is nodes


def test_bash_task_inside_a_graph() -> None:
    hello = rs.BashTask("hello", "printf 'a\\nb\\n'")

    @rs.Task
    def lines(text: str) -> list[str]:
        return text.splitlines()

    @rs.Asset.from_graph()
    def shell() -> list[str]:
        return lines(hello())

    repo = make_repo([shell], rs.Executor.in_process())
    assert repo.materialize().success
    assert repo.load_node("shell/hello") == "a\nb"
    assert repo.load_node("shell") == ["a", "b"]


def test_graph_hooks_fire_once_per_run() -> None:
    seen: list[tuple[str, object, object]] = []
    hooks = [rs.Hook.success(lambda hc: seen.append(("ok", hc.output, hc.error))),
             rs.Hook.failure(lambda hc: seen.append(("failed", hc.output, type(hc.error).__name__)))]

    @rs.Asset.from_graph(hooks=hooks)
    def good() -> int:
        return gp.total(gp.clean(gp.fetch("abcd")))

    @rs.Asset.from_graph(hooks=hooks)
    def bad() -> int:
        return gp.explode(gp.clean(gp.fetch("abcd")))

    make_repo([good], rs.Executor.in_process()).materialize()
    make_repo([bad], rs.Executor.in_process()).materialize(raise_on_error=False)
    assert seen == [("ok", 9, None), ("failed", None, "ValueError")]


def test_fan_out_with_max_concurrency(executor: rs.Executor, counters: Path) -> None:
    repo = make_repo([gp.fanned], executor)
    result = repo.materialize()
    assert result.success
    names = result.materialized_assets
    assert names[:2] == ["fanned/numbers", "fanned/square"]
    assert [n for n in names if n.startswith("fanned/square__") and n != "fanned/square__collect"] == [
        f"fanned/square__{i}" for i in range(100)
    ]
    assert names[-3:] == ["fanned/square__collect", "fanned/total", "fanned"]
    assert repo.load_node("fanned") == sum(i * i for i in range(100))
    assert repo.load_node("fanned/square__7") == 49
    peak = max(int(path.name.removeprefix("seen-")) for path in counters.glob("seen-*"))
    assert 1 <= peak <= 3


def test_dynamic_output_keys_name_instances(tmp_path: Path) -> None:
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix="p")

    @rs.Asset.from_graph(node_io_handler=handler)
    def keyed_graph() -> list[int]:
        return gp.as_list(gp.keyed().map(gp.square).collect())

    repo = make_repo([keyed_graph], rs.Executor.in_process())
    result = repo.materialize()
    assert {"keyed_graph/square__alpha", "keyed_graph/square__beta", "keyed_graph/square__gamma"} <= set(
        result.materialized_assets
    )
    assert (tmp_path / "p" / "keyed_graph" / "square__beta.pkl").exists()
    assert repo.load_node("keyed_graph") == [1, 4, 9]
    assert repo.load_node("keyed_graph/square__gamma") == 9


def test_collect_stream_ordered_gives_source_order(executor: rs.Executor) -> None:
    repo = make_repo([gp.dynamic], executor)
    assert repo.materialize().success
    assert repo.load_node("dynamic") == [1, 4, 9]


def test_collect_stream_is_an_iterator_in_completion_order() -> None:
    received: list[object] = []

    @rs.Task
    def consume(values: object) -> list[int]:
        received.append(values)
        return list(values)  # type: ignore[call-overload]

    @rs.Asset.from_graph()
    def streamed() -> list[int]:
        return consume(gp.numbers(5).map(gp.square).collect_stream())

    repo = make_repo([streamed], rs.Executor.in_process())
    assert repo.materialize().success
    assert not isinstance(received[0], list) and iter(received[0]) is received[0]
    assert sorted(repo.load_node("streamed")) == [0, 1, 4, 9, 16]


def test_empty_fan_out_runs_downstream_with_empty_list(executor: rs.Executor) -> None:
    repo = make_repo([gp.empty_fan], executor)
    result = repo.materialize()
    assert result.success
    assert "empty_fan/square__collect" in result.materialized_assets
    assert repo.load_node("empty_fan") == 0


def test_failed_instance_fails_fan_out_and_siblings_finish(executor: rs.Executor) -> None:
    repo = make_repo([gp.failing_fan, gp.after_failing_fan, gp.independent], executor)
    result = repo.materialize(raise_on_error=False)
    failed = dict(result.failed_assets)
    assert failed["failing_fan/fails_on_two__2"] == "RuntimeError: two is not allowed"
    assert failed["failing_fan/fails_on_two"].startswith("RuntimeError: fan-out instance")
    skipped = "ExecutionError: Skipped: upstream dependency failed"
    assert failed["failing_fan/fails_on_two__collect"] == skipped
    assert failed["failing_fan"] == skipped
    assert failed["after_failing_fan"] == skipped
    for sibling in ("0", "1", "3"):
        assert f"failing_fan/fails_on_two__{sibling}" not in failed
        assert repo.load_node(f"failing_fan/fails_on_two__{sibling}") == int(sibling)
    assert "independent" in result.materialized_assets


def test_mixed_dynamic_and_plain_items_fail_at_run_time() -> None:
    @rs.Task
    def mixed() -> list[object]:
        return [rs.DynamicOutput("a", 1), 2]

    @rs.Asset.from_graph()
    def mixer() -> int:
        return gp.total(mixed().map(gp.square).collect())

    result = make_repo([mixer], rs.Executor.in_process()).materialize(raise_on_error=False)
    assert "Cannot mix DynamicOutput and plain values" in dict(result.failed_assets)["mixer/mixed"]


def test_wiring_errors_at_decoration() -> None:
    with pytest.raises(TypeError, match="must be collected"):
        @rs.Asset.from_graph()
        def uncollected() -> int:
            return gp.total(gp.numbers(3).map(gp.square))

    with pytest.raises(TypeError, match="Task"):
        @rs.Asset.from_graph()
        def not_a_task() -> object:
            return gp.numbers(3).map(len)


def test_upstream_asset_can_be_mapped(executor: rs.Executor) -> None:
    @rs.Asset
    def items() -> list[int]:
        return [1, 2, 3]

    @rs.Asset.from_graph()
    def squares(items: list[int]) -> int:
        return gp.total(items.map(gp.square).collect())

    repo = make_repo([items, squares], rs.Executor.in_process())
    assert repo.materialize().success
    assert repo.load_node("squares") == 14


def test_node_executor_override_is_seen_in_worker_pids(tmp_path: Path) -> None:
    repo = make_repo([gp.internals_in_pool, gp.internals_in_one_worker], rs.Executor.in_process(),
                     default_io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path / "values"), mkdir=True)))
    result = repo.materialize()
    assert result.success
    in_pool = repo.load_node("internals_in_pool")
    assert os.getpid() not in in_pool
    one_worker = repo.load_node("internals_in_one_worker")
    assert len(set(one_worker)) == 1 and os.getpid() not in one_worker
    # the graph was one step: its tasks never came back to the coordinator in between
    assert "internals_in_one_worker" in result.step_results
    assert "internals_in_one_worker/pid_of" not in result.step_results
    assert "internals_in_one_worker/pid_of" in result.materialized_assets
