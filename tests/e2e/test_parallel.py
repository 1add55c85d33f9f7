"""Executor.parallel(), end to end: steps really run in pool processes (issue 3).

Every test proves where a step ran by the pid it reports, and waits for other steps through
files with a deadline (see tests/pipelines/parallel_pipeline.py), never by timing.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore

import rivers as rs
from rivers.coordinator.coordinator import RemoteTraceback
from rivers.executors.parallel import parallel_queue
from tests.pipelines import parallel_pipeline as pp

pytestmark = pytest.mark.slow

TWO = rs.Executor.parallel(max_workers=2)


@pytest.fixture
def handler(tmp_path: Path) -> rs.PickleIOHandler:
    return rs.PickleIOHandler(LocalStore(str(tmp_path)))


@pytest.fixture
def scratch(tmp_path: Path) -> pp.Scratch:
    directory = tmp_path / "scratch"
    directory.mkdir()
    return pp.Scratch(dir=str(directory))


def repo_of(assets: list[Any], handler: rs.BaseIOHandler, executor: rs.Executor | None = TWO,
            **kwargs: Any) -> rs.CodeRepository:
    return rs.CodeRepository(assets, default_executor=executor, default_io_handler=handler, **kwargs)


def test_sibling_steps_run_in_pool_processes(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.left, pp.right, pp.joined], handler)
    result = repo.materialize()
    assert result.success
    joined = repo.load_node("joined")
    pids = {joined["left"], joined["right"], joined["joined"]}
    assert os.getpid() not in pids
    assert pids <= set(parallel_queue(TWO).pool.worker_pids())
    assert result.step_results["left"].pid == joined["left"]


def test_inputs_are_loaded_in_the_worker(tmp_path: Path) -> None:
    recorder = pp.RecordingHandler(LocalStore(str(tmp_path)), record_dir=str(tmp_path))
    repo = repo_of([pp.left, pp.right, pp.joined], recorder)
    assert repo.materialize().success
    loads = [line.split() for line in (tmp_path / "loads").read_text().splitlines()]
    assert sorted((up, down) for up, down, _ in loads) == [("left", "joined"), ("right", "joined")]
    assert {int(pid) for _, _, pid in loads} == {repo.load_node("joined")["joined"]}
    assert os.getpid() not in {int(pid) for _, _, pid in loads}


def test_resources_arrive_rebuilt_and_set_up(handler: rs.PickleIOHandler, scratch: pp.Scratch) -> None:
    repo = repo_of([pp.uses_scratch], handler, resources={"scratch": scratch})
    assert repo.materialize().success
    assert repo.materialize().success
    value = repo.load_node("uses_scratch")
    assert value["pid"] != os.getpid()
    assert value["ready"] is True and value["dir"] == scratch.dir
    setups = [p.name.split("-")[1] for p in Path(scratch.dir).glob("setup-*")]
    worker_setups = [pid for pid in setups if int(pid) != os.getpid()]
    assert worker_setups and len(worker_setups) == len(set(worker_setups))  # once per worker process


def test_resources_are_torn_down_when_the_pool_stops(handler: rs.PickleIOHandler, scratch: pp.Scratch) -> None:
    executor = rs.Executor.parallel(max_workers=1, max_async_concurrent=99)  # a queue of this test's own
    repo = repo_of([pp.uses_scratch], handler, executor, resources={"scratch": scratch})
    assert repo.materialize().success
    worker = repo.load_node("uses_scratch")["pid"]
    parallel_queue(executor).shutdown()
    torn_down = {int(p.name.split("-")[1]) for p in Path(scratch.dir).glob("teardown-*")}
    assert worker in torn_down


def test_closures_run_in_the_pool(handler: rs.PickleIOHandler) -> None:
    offset = 100

    @rs.Asset
    def local_asset() -> tuple[int, int]:
        return offset + 1, os.getpid()

    @rs.Asset
    def local_child(local_asset: tuple[int, int]) -> int:
        return local_asset[0] * 2

    repo = repo_of([local_asset, local_child], handler)
    assert repo.materialize().success
    value, pid = repo.load_node("local_asset")
    assert (value, repo.load_node("local_child")) == (101, 202)
    assert pid != os.getpid()


def test_a_handler_that_cannot_be_pickled_travels_as_json(tmp_path: Path) -> None:
    locked = pp.LockedHandler(LocalStore(str(tmp_path)))
    with pytest.raises(TypeError):
        pickle.dumps(locked)
    repo = repo_of([pp.locked_value, pp.after_locked], locked, resources={"locked": locked})
    result = repo.materialize()
    assert result.success
    assert repo.load_node("after_locked") == 42
    assert os.getpid() not in {result.step_results[k].pid for k in ("locked_value", "after_locked")}


def test_errors_keep_their_type_message_and_remote_traceback(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.bad, pp.after_bad, pp.independent], handler)
    with pytest.raises(pp.PipelineError, match="boom 42") as raised:
        repo.materialize()
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "boom 42" in cause.text and "in bad" in cause.text


def test_failure_skips_downstream_and_independent_branch_completes(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.bad, pp.after_bad, pp.independent], handler)
    result = repo.materialize(raise_on_error=False)
    assert not result.success
    assert result.failed_assets == [
        ("bad", "PipelineError: boom 42"),
        ("after_bad", "ExecutionError: Skipped: upstream dependency failed"),
    ]
    assert repo.load_node("independent") == "still here"
    assert result.step_results["bad"].pid != os.getpid()


def test_stdout_and_context_log_are_captured(handler: rs.PickleIOHandler) -> None:
    result = repo_of([pp.chatty], handler).materialize()
    logs = {(entry.logger, entry.message) for entry in result.step_results["chatty"].logs}
    assert ("stdout", "hello from the worker") in logs
    assert ("code-repo.assets.chatty", "a context.log record") in logs


def test_sync_and_async_steps_overlap(handler: rs.PickleIOHandler, scratch: pp.Scratch) -> None:
    repo = repo_of([pp.sync_side, pp.async_side], handler, resources={"scratch": scratch})
    result = repo.materialize()
    assert result.success  # each waits for the other to have started
    assert repo.load_node("sync_side") != os.getpid()
    assert repo.load_node("async_side") == os.getpid()  # async steps run on the consumer's event loop


def test_max_async_concurrent_is_respected(handler: rs.PickleIOHandler) -> None:
    pp.reset_async_peak(target=2)
    executor = rs.Executor.parallel(max_workers=2, max_async_concurrent=2)
    assert repo_of(pp.ASYNC_STEPS, handler, executor).materialize().success
    assert pp.async_peak() == 2


def test_async_steps_run_concurrently_without_a_limit(handler: rs.PickleIOHandler) -> None:
    pp.reset_async_peak(target=len(pp.ASYNC_STEPS))
    assert repo_of(pp.ASYNC_STEPS, handler).materialize().success
    assert pp.async_peak() == len(pp.ASYNC_STEPS)


def test_rivers_executor_metadata_pins_a_step_to_the_coordinator(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.pinned_in_process, pp.left], handler, TWO)
    assert repo.materialize().success
    assert repo.load_node("pinned_in_process") == os.getpid()
    assert repo.load_node("left") != os.getpid()


def test_rivers_executor_metadata_sends_a_step_to_the_pool(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.pinned_parallel, pp.left], handler, rs.Executor.in_process())
    assert repo.materialize().success
    assert repo.load_node("pinned_parallel") != os.getpid()
    assert repo.load_node("left") == os.getpid()


def test_quick_start_chain_without_io_handlers_runs_under_the_default_executor() -> None:
    @rs.Asset
    def numbers() -> list[int]:
        return [1, 2, 3]

    @rs.Asset
    def doubled(numbers: list[int]) -> list[int]:
        return [n * 2 for n in numbers]

    @rs.Asset
    async def total(doubled: list[int]) -> int:
        return sum(doubled)

    repo = rs.CodeRepository([numbers, doubled, total])  # default executor: Executor.parallel()
    result = repo.materialize()
    assert result.success
    assert repo.load_node("total") == 12
    assert {r.pid for r in result.step_results.values()} == {os.getpid()}


def test_moved_steps_are_named_once_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    @rs.Asset
    def first() -> int:
        return 1

    @rs.Asset
    def second(first: int) -> int:
        return first + 1

    repo = rs.CodeRepository([first, second], default_executor=TWO)
    assert repo.materialize().success
    err = capsys.readouterr().err
    assert err.count("steps.moved_to_coordinator") == 1
    assert "first" in err and "second" in err


@pytest.mark.parametrize("how, cause", [
    ("sigkill", "killed by signal 9 (SIGKILL)"),
    ("exit", "exited with code 3"),
    ("segfault", "killed by signal 11 (SIGSEGV)"),
])
def test_dead_worker_costs_only_its_own_step(
    handler: rs.PickleIOHandler, scratch: pp.Scratch, how: str, cause: str
) -> None:
    Path(scratch.dir, "how").write_text(how)
    repo = repo_of([pp.always_dies, pp.sibling_of_always, pp.after_death, pp.independent], handler,
                   resources={"scratch": scratch})
    result = repo.materialize(raise_on_error=False)
    assert result.failed_assets == [
        ("always_dies", f"WorkerLost: worker process died: {cause} while running 'always_dies'"),
        ("after_death", "ExecutionError: Skipped: upstream dependency failed"),
    ]
    assert result.step_results["always_dies"].attempt == 3  # two infrastructure retries
    assert result.step_results["always_dies"].error.infrastructure  # type: ignore[union-attr]
    assert scratch.lines("always_dies") == 3
    sibling = result.step_results["sibling_of_always"]
    assert sibling.status == "succeeded" and sibling.attempt == 1  # in flight beside the deaths, untouched
    assert scratch.lines("sibling") == 1
    assert repo.load_node("independent") == "still here"
    assert repo_of([pp.left, pp.right], handler).materialize().success  # the pool works for the next run


def test_a_step_whose_worker_died_is_retried_and_the_run_succeeds(
    handler: rs.PickleIOHandler, scratch: pp.Scratch
) -> None:
    repo = repo_of([pp.dies_once, pp.sibling], handler, resources={"scratch": scratch})
    result = repo.materialize()
    assert result.success
    assert result.step_results["dies_once"].attempt == 2
    assert repo.load_node("dies_once") == 2
    assert result.step_results["sibling"].attempt == 1  # a dead process costs only its own step
    assert scratch.lines("sibling") == 1


def test_concurrent_runs_share_the_pool(handler: rs.PickleIOHandler, tmp_path: Path) -> None:
    results: list[rs.RunResult] = []

    def run(prefix: str) -> None:
        own = rs.PickleIOHandler(LocalStore(str(tmp_path)), prefix=prefix)
        results.append(repo_of([pp.left, pp.right, pp.joined], own).materialize())

    threads = [threading.Thread(target=run, args=(f"run{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 3 and all(r.success for r in results)


def test_graph_tasks_constants_and_fan_out_run_in_the_pool(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.graph_in_pool], handler)
    result = repo.materialize()
    assert result.success
    value = repo.load_node("graph_in_pool")
    assert [x for x, _ in value] == [0, 3, 6, 9, -1]
    assert os.getpid() not in {pid for _, pid in value}
    assert {r.pid for r in result.step_results.values() if r.pid} - {os.getpid()}


def test_a_fused_graph_runs_its_internal_tasks_in_one_worker(handler: rs.PickleIOHandler) -> None:
    repo = repo_of([pp.fused_graph], handler)
    assert repo.materialize().success
    pids = {pid for _, pid in repo.load_node("fused_graph")}
    assert len(pids) == 1 and os.getpid() not in pids
