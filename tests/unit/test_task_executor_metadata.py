"""`@rs.Task(metadata={...})`: an inner task's own executor metadata comes first (API.md §1, issue 10 item 9).

Order for a graph's internal task: its own rivers/node/executor, its own rivers/executor, the graph's
rivers/node/executor, the graph's rivers/executor, then the run's executor. rivers 0.6.2 rejects the keyword
(`Task() got an unexpected keyword argument 'metadata'`); its executors page documents it, so we accept it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from obstore.store import LocalStore

import rivers as rs
from rivers.exceptions import ConfigurationError
from rivers.plan import Plan, build_plan


@rs.Task(metadata={"rivers/executor": "parallel"})
def own_executor() -> int:
    return 1


@rs.Task(metadata={"rivers/node/executor": "kubernetes", "rivers/executor": "parallel"})
def own_node_executor(value: int) -> int:
    return value + 1


@rs.Task
def inherits(value: int) -> int:
    return value * 10


@rs.Asset.from_graph(metadata={"rivers/executor": "parallel", "rivers/node/executor": "in_process"})
def mixed() -> int:
    return inherits(own_node_executor(own_executor()))


@rs.Task
def plain_first() -> int:
    return 2


@rs.Task
def plain_second(value: int) -> int:
    return value + 1


@rs.Asset.from_graph(metadata={"rivers/executor": "parallel", "rivers/node/executor": "in_process"})
def fusable() -> int:
    return plain_second(plain_first())


@rs.Task(metadata={"rivers/executor": "parallel"})
def in_pool() -> int:
    return os.getpid()


@rs.Task
def in_coordinator(pool_pid: int) -> list[int]:
    return [pool_pid, os.getpid()]


@rs.Asset.from_graph()
def pids() -> list[int]:
    return in_coordinator(in_pool())


def plan_of(assets: list[object], tmp_path: Path) -> Plan:
    repo = rs.CodeRepository(assets, default_io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))))
    graph = repo._resolve()
    return build_plan(graph, set(graph.producer), rs.Executor.parallel(1), False)


def test_an_inner_tasks_own_metadata_decides_its_executor(tmp_path: Path) -> None:
    plan = plan_of([mixed], tmp_path)
    executors = {key: step.executor for key, step in plan.steps.items()}
    assert executors == {"mixed/own_executor": "parallel", "mixed/own_node_executor": "kubernetes",
                         "mixed/inherits": "in_process"}


def test_a_graph_whose_tasks_all_stay_in_process_is_one_step(tmp_path: Path) -> None:
    plan = plan_of([fusable], tmp_path)
    assert list(plan.steps) == ["fusable"] and plan.steps["fusable"].executor == "parallel"
    assert [member.name for member in plan.steps["fusable"].node.members] == ["fusable/plain_first",
                                                                              "fusable/plain_second"]


def test_task_metadata_is_kept_and_checked() -> None:
    assert own_executor.metadata == {"rivers/executor": "parallel"}
    with pytest.raises(TypeError, match="Task metadata must be a dict"):
        rs.Task(metadata=["rivers/executor"])(lambda: 1)  # type: ignore[arg-type]


def test_an_unknown_executor_in_task_metadata_is_refused_at_resolve() -> None:
    @rs.Task(metadata={"rivers/executor": "gpu-farm"})
    def odd() -> int:
        return 1

    @rs.Asset.from_graph()
    def holder() -> int:
        return odd()

    with pytest.raises(ConfigurationError, match="Unknown executor in rivers/executor metadata: 'gpu-farm'"):
        rs.CodeRepository([holder]).validate()


def test_an_inner_task_asking_for_the_pool_runs_there_and_its_siblings_here(tmp_path: Path) -> None:
    repo = rs.CodeRepository([pids], default_io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))),
                             default_executor=rs.Executor.in_process())
    assert repo.materialize().success
    pool_pid, here_pid = repo.load_node("pids")
    assert here_pid == os.getpid() and pool_pid != os.getpid()
