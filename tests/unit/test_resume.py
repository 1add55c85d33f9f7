"""A coordinator seeded with a run's stored results runs only what is missing (resume after a crash)."""

from __future__ import annotations

import uuid

import rivers as rs
from rivers.coordinator.coordinator import Coordinator
from rivers.plan import build_plan
from rivers.run import run_resources

RUNS: list[str] = []


@rs.Task
def items() -> list[int]:
    RUNS.append("items")
    return [1, 2, 3, 4]


@rs.Task
def double(x: int) -> int:
    RUNS.append(f"double {x}")
    return 2 * x


@rs.Task
def total(values: list[int]) -> int:
    RUNS.append("total")
    return sum(values)


@rs.Asset.from_graph()
def doubled() -> int:
    return total(items().map(double).collect())


@rs.Asset
def report(doubled: int) -> str:
    RUNS.append("report")
    return f"{doubled}"


def run(repo: rs.CodeRepository, seed: dict[str, rs.RunResult] | None = None) -> rs.RunResult:
    graph = repo._resolve()
    executor = rs.Executor.in_process()
    plan = build_plan(graph, set(graph.producer), executor, True)
    coordinator = Coordinator(str(uuid.uuid4()), plan, {}, run_resources(repo, {}), {}, seed=seed)  # type: ignore[arg-type]
    return coordinator.execute()


def test_resume_runs_only_the_missing_fan_out_instances_and_downstream() -> None:
    repo = rs.CodeRepository([doubled, report], default_executor=rs.Executor.in_process())
    first = run(repo)
    assert first.success and len(RUNS) == 7
    stored = dict(first.step_results)
    for lost in ("doubled/double__1", "doubled/double__3", "doubled/double", "doubled/double__collect",
                 "doubled/total", "report"):
        del stored[lost]
    RUNS.clear()
    second = run(repo, seed=stored)  # type: ignore[arg-type]
    assert second.success
    assert sorted(RUNS) == ["double 2", "double 4", "report", "total"]
    assert repo.load_node("report") == "20"
    assert second.materialized_assets == first.materialized_assets


def test_resume_after_the_fan_out_finished_runs_the_collect_with_every_instance() -> None:
    repo = rs.CodeRepository([doubled, report], default_executor=rs.Executor.in_process())
    first = run(repo)
    stored = dict(first.step_results)
    for lost in ("doubled/double__collect", "doubled/total", "report"):
        del stored[lost]
    RUNS.clear()
    second = run(repo, seed=stored)  # type: ignore[arg-type]
    assert second.success
    assert RUNS == ["total", "report"]
    assert repo.load_node("doubled") == 20
