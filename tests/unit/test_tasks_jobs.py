"""Tasks, BashTask and Job (API.md §2) on the in-process executor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import rivers as rs
from tests.unit.conftest import make_repo


def test_standalone_tasks_depend_on_assets_and_tasks() -> None:
    order: list[str] = []

    @rs.Asset
    def data() -> list[int]:
        order.append("data")
        return [1, 2]

    @rs.Task
    def count(data: list[int]) -> int:
        order.append("count")
        return len(data)

    @rs.Task(name="describe")
    def describe_fn(count: int, data: list[int]) -> str:
        order.append("describe")
        return f"{count} items: {data}"

    repo = make_repo([data], tasks=[describe_fn, count])
    result = repo.materialize()
    assert result.success
    assert order == ["data", "count", "describe"]
    assert set(result.materialized_assets) == {"data", "count", "describe"}
    assert repo.load_node("describe") == "2 items: [1, 2]"
    assert "count" not in repo.assets  # tasks are steps, not assets


def test_calling_a_task_outside_a_graph_runs_it() -> None:
    @rs.Task
    def add(a: int, b: int = 2) -> int:
        return a + b

    assert add(1) == 3
    assert add(a=1, b=5) == 6


def test_failing_task_skips_its_downstream() -> None:
    @rs.Task
    def broken() -> int:
        raise KeyError("k")

    @rs.Task
    def after(broken: int) -> int:
        return broken

    result = make_repo([], tasks=[broken, after]).materialize(raise_on_error=False)
    assert result.failed_assets == [
        ("broken", "KeyError: 'k'"),
        ("after", "ExecutionError: Skipped: upstream dependency failed"),
    ]


# -- BashTask ---------------------------------------------------------------------------------
def test_bash_task_string_runs_through_sh() -> None:
    task = rs.BashTask("greet", "echo hello; echo world")
    repo = make_repo([], tasks=[task])
    assert repo.materialize().success
    assert repo.load_node("greet") == "hello\nworld"


def test_bash_task_list_is_execd_without_a_shell(tmp_path: Path) -> None:
    task = rs.BashTask("literal", ["echo", "$HOME;", "x"], cwd=str(tmp_path))
    repo = make_repo([], tasks=[task])
    repo.materialize()
    assert repo.load_node("literal") == "$HOME; x"


def test_bash_task_env_and_cwd(tmp_path: Path) -> None:
    env = {"GREETING": "hi", "PATH": "/usr/bin:/bin"}
    task = rs.BashTask("envy", "echo $GREETING; pwd", env=env, cwd=str(tmp_path))
    repo = make_repo([], tasks=[task])
    repo.materialize()
    assert repo.load_node("envy") == f"hi\n{tmp_path}"


def test_bash_task_strips_only_one_trailing_newline() -> None:
    task = rs.BashTask("nl", ["printf", "a\\n\\n"])
    repo = make_repo([], tasks=[task])
    repo.materialize()
    assert repo.load_node("nl") == "a\n"


def test_bash_task_nonzero_exit_is_an_os_error() -> None:
    task = rs.BashTask("fails", "echo oops >&2; exit 3")
    repo = make_repo([], tasks=[task])
    with pytest.raises(OSError, match="Command failed with exit status: 3: oops"):
        repo.materialize()
    result = repo.materialize(raise_on_error=False)
    name, message = result.failed_assets[0]
    assert name == "fails" and message == "OSError: Command failed with exit status: 3: oops"


def test_bash_task_attributes() -> None:
    task = rs.BashTask("b", [sys.executable, "-c", "print(1)"], tags=["x"])
    assert task.name == "b" and task.tags == ["x"] and task.command[0] == sys.executable
    assert task.is_async is False
    repo = make_repo([], tasks=[task])
    repo.materialize()
    assert repo.load_node("b") == "1"


# -- Job --------------------------------------------------------------------------------------
def job_pipeline(calls: list[str]) -> list[Any]:
    @rs.Asset
    def j_up() -> int:
        calls.append("j_up")
        return 1

    @rs.Asset
    def j_down(j_up: int) -> int:
        calls.append("j_down")
        return j_up + 1

    @rs.Asset
    def j_other() -> int:
        calls.append("j_other")
        return 0

    return [j_up, j_down, j_other]


def test_job_get_and_execute_runs_its_selection() -> None:
    calls: list[str] = []
    up, down, other = job_pipeline(calls)
    repo = make_repo([up, down, other], jobs=[rs.Job("pair", [up, down]), rs.Job("other", [other])])
    job = repo.get_job("pair")
    assert isinstance(job, rs.Job) and job.name == "pair"
    result = job.execute()
    assert isinstance(result, rs.RunResult) and result.success
    assert result.materialized_assets == ["j_up", "j_down"]
    assert calls == ["j_up", "j_down"]
    assert repo.get_job("other").execute().materialized_assets == ["j_other"]


def test_job_execute_raise_on_error_false() -> None:
    @rs.Asset
    def jfail() -> int:
        raise ValueError("bad")

    repo = make_repo([jfail], jobs=[rs.Job("j", [jfail])])
    with pytest.raises(ValueError, match="bad"):
        repo.get_job("j").execute()
    result = repo.get_job("j").execute(raise_on_error=False)
    assert result.failed_assets == [("jfail", "ValueError: bad")]


def test_job_executor_overrides_the_repository_default(tmp_path: Path) -> None:
    import os

    from obstore.store import LocalStore

    pids: list[int] = []

    @rs.Asset(io_handler=rs.PickleIOHandler(LocalStore(str(tmp_path))))  # not process-local
    def where() -> int:
        pids.append(os.getpid())
        return 1

    repo = rs.CodeRepository([where], jobs=[rs.Job("j", [where], executor=rs.Executor.in_process())],
                             default_executor=rs.Executor.parallel(1))
    repo.get_job("j").execute()
    assert pids == [os.getpid()]


def test_job_with_tasks_and_bash_tasks() -> None:
    @rs.Task
    def jt() -> int:
        return 4

    bash = rs.BashTask("jb", "echo 5")
    repo = make_repo([], tasks=[jt, bash], jobs=[rs.Job("tasks", [jt, bash])])
    result = repo.get_job("tasks").execute()
    assert sorted(result.materialized_assets) == ["jb", "jt"]
    assert repo.load_node("jb") == "5"
