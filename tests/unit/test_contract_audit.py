"""Sentences of API.md checked one by one while auditing the contract (sections 1-9).

Each test names the sentence it proves; most run in-process, the few about another executor use
Executor.parallel with a PickleIOHandler so values cross processes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.pipelines import contract_audit_pipeline as cap
from tests.unit.conftest import make_repo


# -- §1 Executors -----------------------------------------------------------------------------
def test_parallel_default_max_workers_follows_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert rs.Executor.parallel().max_workers == 1
    assert repr(rs.Executor.parallel()) == "Executor.Parallel(max_workers=1)"


def test_unknown_graph_executor_metadata_is_rejected_at_resolution() -> None:
    """Both executor keys of a graph are checked, also the one its tasks never read."""

    @rs.Task
    def one() -> int:
        return 1

    @rs.Asset.from_graph(metadata={"rivers/node/executor": "in_process", "rivers/executor": "gpu-farm"})
    def graph() -> Any:
        return one()

    repo = make_repo([graph])  # the constructor does not check it
    with pytest.raises(rs.ConfigurationError, match="Unknown executor in rivers/executor metadata: 'gpu-farm'"):
        repo.validate()


def test_run_config_execution_overrides_job_and_default_but_not_node_metadata(tmp_path: Path) -> None:
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path), mkdir=True))
    nodes = [cap.where_free, cap.where_pinned_parallel]
    repo = rs.CodeRepository(nodes, default_io_handler=handler, default_executor=rs.Executor.parallel(1),
                             jobs=[rs.Job("j", nodes, executor=rs.Executor.parallel(1))])

    def pids() -> dict[str, bool]:
        return {name: repo.load_node(name) == os.getpid() for name in ("where_free", "where_pinned_parallel")}

    repo.get_job("j").execute(config={"execution": {"executor": "in_process"}})
    assert pids() == {"where_free": True, "where_pinned_parallel": False}
    repo.materialize(config={"execution": {"executor": "in_process"}})
    assert pids() == {"where_free": True, "where_pinned_parallel": False}
    repo.materialize()
    assert pids() == {"where_free": False, "where_pinned_parallel": False}


def test_moved_steps_warning_only_when_another_executor_was_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    @rs.Asset
    def kept_here() -> int:  # the default InMemoryIOHandler keeps it in the coordinator's process
        return 1

    capsys.readouterr()
    rs.CodeRepository([kept_here]).materialize()  # nobody asked for parallel: the default is silent
    assert "steps.moved_to_coordinator" not in capsys.readouterr().err
    rs.CodeRepository([kept_here]).materialize(config={"execution": {"executor": "parallel", "max_workers": 1}})
    err = capsys.readouterr().err
    assert err.count("steps.moved_to_coordinator") == 1 and "kept_here" in err


# -- §2 Definitions ---------------------------------------------------------------------------
def test_tasks_used_in_a_graph_and_listed_in_tasks_add_no_standalone_step() -> None:
    calls: list[str] = []

    @rs.Task
    def fetch(url: str) -> str:
        calls.append(url)
        return url.upper()

    @rs.Task
    def shout(text: str) -> str:
        return text + "!"

    @rs.Asset.from_graph()
    def page() -> Any:
        return shout(fetch("url"))  # a literal argument is a constant

    repo = make_repo([page], tasks=[fetch, shout])
    result = repo.materialize()
    assert result.materialized_assets == ["page/fetch", "page/shout", "page"]
    assert calls == ["url"]
    assert repo.load_node("page") == "URL!"
    with pytest.raises(rs.AssetNotFoundError):
        repo.materialize(["fetch"])


def test_a_listed_task_not_used_in_a_graph_is_still_a_standalone_step() -> None:
    @rs.Task
    def inside() -> int:
        return 1

    @rs.Task
    def alone() -> int:
        return 2

    @rs.Asset.from_graph()
    def wrapper() -> Any:
        return inside()

    result = make_repo([wrapper], tasks=[inside, alone]).materialize()
    assert sorted(result.materialized_assets) == ["alone", "wrapper", "wrapper/inside"]


def test_graph_internal_tasks_get_a_task_context_in_worker_processes(tmp_path: Path) -> None:
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path), mkdir=True))
    repo = rs.CodeRepository([cap.context_kind, cap.graph_context], default_io_handler=handler,
                             default_executor=rs.Executor.parallel(2))
    result = repo.materialize()
    assert all(r.pid != os.getpid() for r in result.step_results.values())
    assert repo.load_node("context_kind") == "AssetExecutionContext"
    assert repo.load_node("graph_context") == "TaskExecutionContext:graph_context/describe_context"


# -- §3 CodeRepository ------------------------------------------------------------------------
def test_constructor_checks_only_resources() -> None:
    repo = rs.CodeRepository([42], default_executor=rs.Executor.in_process())  # type: ignore[list-item]
    with pytest.raises(rs.GraphValidationError, match="got int"):
        repo.validate()
    with pytest.raises(rs.ConfigurationError, match=r"got int$"):
        rs.CodeRepository([], resources={"r": 42})


@pytest.mark.parametrize("where, phrase", [
    ("node", "referenced by asset 'named'"),
    ("job", "referenced by job 'j'"),
    ("default", "in default_retry_policy"),
])
def test_unknown_retry_name_is_a_configuration_error_quoting_names_once(where: str, phrase: str) -> None:
    @rs.Asset(name="named", retry="missing" if where == "node" else None)
    def named() -> int:
        return 1

    jobs = [rs.Job("j", [named], retry="missing")] if where == "job" else None
    repo = make_repo([named], jobs=jobs, retries={"fast": rs.RetryPolicy(1)},
                     default_retry_policy="missing" if where == "default" else None)
    with pytest.raises(rs.ConfigurationError) as info:
        repo.validate()
    message = str(info.value)
    assert "unknown retry policy 'missing'" in message and phrase in message and "''" not in message
    assert message.endswith('registered: ["fast"]')  # rivers 0.6.2's wording


# -- §7 Retries, compute ----------------------------------------------------------------------
def test_compute_outside_kubernetes_warns_naming_the_steps() -> None:
    @rs.Asset(compute=rs.Compute(cpu="2"))
    def sized() -> int:
        return 1

    @rs.Asset
    def plain(sized: int) -> int:
        return sized

    @rs.Asset
    def unsized() -> int:
        return 1

    repo = make_repo([sized, plain])
    with pytest.warns(UserWarning, match=r"compute= only applies under the Kubernetes executor.*'sized'") as caught:
        assert repo.materialize().success
    assert len(caught) == 1 and "'plain'" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no compute=, no warning
        assert make_repo([unsized]).materialize().success


@pytest.mark.slow
def test_a_retry_policy_governs_infrastructure_failures_too(tmp_path: Path) -> None:
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path), mkdir=True))
    repo = rs.CodeRepository([cap.dies_under_a_narrow_policy, cap.dies_under_a_transient_policy],
                             default_io_handler=handler, default_executor=rs.Executor.parallel(2))
    result = repo.materialize(raise_on_error=False)
    narrow = result.step_results["dies_under_a_narrow_policy"]
    transient = result.step_results["dies_under_a_transient_policy"]
    assert narrow.attempt == 1  # retry_on=[ValueError]: no default infrastructure retries
    assert transient.attempt == 2  # a dead worker is transient: 1 + max_retries attempts
    assert dict(result.failed_assets)["dies_under_a_narrow_policy"].startswith("WorkerLost: ")
