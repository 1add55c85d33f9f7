"""A smaller crash matrix for rivers-worker processes fed through Redis (the pipelines of test_crash_matrix).

The worker is started with CRASH_PIPELINE_IMPORT=raise, so tests.pipelines.crash_unimportable cannot
be imported in its pool; the other cells do not use that module.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import crash_pipeline as cp
from tests.pipelines import import_hang
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

SKIPPED = "ExecutionError: Skipped: upstream dependency failed"
CELLS = {
    "function-raise": ("function", "raise", "ValueError: function failed"),
    "function-os_exit": ("function", "os_exit",
                         "WorkerLost: worker process died: exited with code 3 while running 'victim'"),
    "function-exit": ("function", "exit", "ExecutionError: 'victim' called sys.exit(3) in a worker process"),
    "spec-raise": ("spec", "raise", "SpecError: step 'victim': cannot load its code: "
                                    "ValueError: importing tests.pipelines.crash_unimportable failed"),
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_step_dying_in_a_remote_worker_fails_alone(
    cell: str, redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    where, how, expected = CELLS[cell]
    workers.start(redis_url, concurrency=2, env={"CRASH_PIPELINE_IMPORT": "raise"})
    victim = importlib.import_module("tests.pipelines.crash_unimportable").victim if where == "spec" else cp.victim
    handler = cp.CrashingHandler(LocalStore(str(tmp_path)), crash_where=where, crash_how=how)
    repo = rs.CodeRepository(
        [cp.upstream, victim, cp.after_victim, cp.sibling, cp.independent],
        default_executor=rs.Executor.parallel(max_workers=2), default_io_handler=handler,
        resources={"crash": cp.Crash(where=where, how=how)},
    )
    result = repo.materialize(raise_on_error=False)
    assert result.failed_assets == [("victim", expected), ("after_victim", SKIPPED)]
    assert result.step_results["victim"].attempt == 1
    assert (repo.load_node("sibling"), repo.load_node("independent")) == (11, "still here")

    again = rs.CodeRepository([cp.upstream, cp.victim, cp.sibling], default_executor=rs.Executor.parallel(),
                              default_io_handler=handler, resources={"crash": cp.Crash()})
    assert again.materialize(raise_on_error=False).success  # the same worker serves the next run
    assert workers.processes[0].poll() is None


# -- a step whose module dies, or hangs, while a rivers-worker pool process imports it --------------------------
# Each module is armed only in the rivers-worker (IMPORT_CRASH_ARMED / IMPORT_HANG_DIR in its environment), so
# this process imports it harmlessly to build the repository. Asset name == module name.

IMPORT_CELLS = {
    "import-os_exit": ("tests.pipelines.import_exit",
                       "WorkerLost: worker process died: exited with code 3 while running 'import_exit'"),
    "import-sigsegv": ("tests.pipelines.import_segv",
                       "WorkerLost: worker process died: killed by signal 11 (SIGSEGV) while running 'import_segv'"),
    "import-sys_exit": ("tests.pipelines.import_sysexit",
                        "SpecError: step 'import_sysexit': cannot load its code: SystemExit: 3"),
}


def _children(worker: subprocess.Popen[bytes]) -> set[int]:
    return {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}


def _assert_same_worker_alive(worker: subprocess.Popen[bytes], created: float) -> None:
    assert worker.poll() is None
    main = psutil.Process(worker.pid)
    assert main.is_running() and main.status() != psutil.STATUS_ZOMBIE
    assert main.create_time() == created  # the same process, not a restarted one with a recycled pid


def _serves_a_fresh_run(worker: subprocess.Popen[bytes], handler: rs.PickleIOHandler) -> None:
    again = rs.CodeRepository([cp.upstream, cp.sibling, cp.pool_pid], default_executor=rs.Executor.parallel(),
                              default_io_handler=handler)
    result = again.materialize(raise_on_error=False)
    assert result.success, result.failed_assets
    assert sorted(result.materialized_assets) == ["pool_pid", "sibling", "upstream"]
    ran_in = again.load_node("pool_pid")
    assert ran_in in _children(worker) and ran_in not in (worker.pid, os.getpid())


@pytest.mark.parametrize("cell", list(IMPORT_CELLS))
def test_a_step_whose_module_dies_on_import_fails_alone(
    cell: str, redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    module, expected = IMPORT_CELLS[cell]
    name = module.rsplit(".", 1)[1]
    [worker] = workers.start(redis_url, concurrency=2, env={"IMPORT_CRASH_ARMED": "1"})
    created = psutil.Process(worker.pid).create_time()
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path / "values"), mkdir=True))
    repo = rs.CodeRepository([cp.upstream, getattr(importlib.import_module(module), name), cp.sibling, cp.independent],
                             default_executor=rs.Executor.parallel(max_workers=2), default_io_handler=handler)
    result = repo.materialize(raise_on_error=False)
    assert result.failed_assets == [(name, expected)]
    assert result.step_results[name].attempt == 2  # its retry imported the module again and died the same way
    assert sorted(result.materialized_assets) == sorted(["independent", name, "sibling", "upstream"])  # ran
    assert all(result.step_results[key].status == "succeeded" for key in ("upstream", "sibling", "independent"))
    assert (repo.load_node("sibling"), repo.load_node("independent")) == (11, "still here")
    _assert_same_worker_alive(worker, created)
    _serves_a_fresh_run(worker, handler)
    _assert_same_worker_alive(worker, created)


def test_a_step_whose_module_hangs_on_import_holds_only_its_own_slot(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    [worker] = workers.start(redis_url, concurrency=2, env={"IMPORT_HANG_DIR": str(hang)})
    created = psutil.Process(worker.pid).create_time()
    values = tmp_path / "values"
    handler = rs.PickleIOHandler(LocalStore(str(values), mkdir=True))
    repo = rs.CodeRepository(
        [cp.upstream, import_hang.import_hang, cp.sibling, cp.independent, cp.while_hanging, cp.after_while_hanging],
        default_executor=rs.Executor.parallel(max_workers=2), default_io_handler=handler,
        resources={"gate": cp.Gate(directory=str(hang))},
    )
    run = Background(repo)
    try:
        [marker] = wait_for(lambda: list(hang.glob("hanging-*")), 30, message="the import to start hanging")
        hanging_pid = int(marker.name.removeprefix("hanging-"))
        assert hanging_pid in _children(worker)
        others = ("upstream", "sibling", "independent", "while_hanging", "after_while_hanging")
        wait_for(lambda: all((values / f"{n}.pkl").exists() for n in others), 30,
                 message="the other steps to finish beside the hanging import")
        assert run.thread.is_alive() and psutil.Process(hanging_pid).is_running()  # it still hangs
        assert not (hang / import_hang.RELEASE).exists()
    finally:
        released = time.time()
        (hang / import_hang.RELEASE).touch()  # the import finishes, and so does the step
    result = run.wait(30)
    assert result.success, result.failed_assets
    assert sorted(result.materialized_assets) == sorted(["import_hang", *others])
    assert repo.load_node("import_hang") == 2 and repo.load_node("sibling") == 11
    hung = result.step_results["import_hang"]
    assert (hung.pid, hung.attempt) == (hanging_pid, 1)
    for name in ("while_hanging", "after_while_hanging"):  # started after the hang began, ended before its release
        step = result.step_results[name]
        assert step.started_at + step.duration_s < released, name
        assert step.pid == repo.load_node(name) and step.pid != hanging_pid and step.pid in _children(worker)
    _assert_same_worker_alive(worker, created)
    _serves_a_fresh_run(worker, handler)


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_a_worker_that_is_killed_takes_its_pool_processes_with_it(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """SIGKILL only the worker's main process: none of its pool processes (idle or busy) may outlive it."""
    gate = tmp_path / "gate"
    gate.mkdir()
    [worker] = workers.start(redis_url, concurrency=2)
    handler = rs.PickleIOHandler(LocalStore(str(tmp_path / "values"), mkdir=True))
    repo = rs.CodeRepository([cp.upstream, cp.pool_pid, cp.blocks], default_executor=rs.Executor.parallel(),
                             default_io_handler=handler, resources={"gate": cp.Gate(directory=str(gate))})
    run = Background(repo)
    pool: list[psutil.Process] = []
    try:
        [marker] = wait_for(lambda: list(gate.glob("blocking-*")), 30, message="'blocks' to start")
        wait_for(lambda: (tmp_path / "values" / "pool_pid.pkl").exists(), 30, message="'pool_pid' to finish")
        pool = workers.tree(worker)
        busy = int(marker.name.removeprefix("blocking-"))
        assert busy in {p.pid for p in pool} and repo.load_node("pool_pid") in {p.pid for p in pool}
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        try:
            wait_for(lambda: not _survivors(pool), 5, message="the pool processes to exit with their worker")
        except AssertionError:
            raise AssertionError(f"pool processes outlived their SIGKILLed worker {worker.pid}: "
                                 f"{[(p.pid, ' '.join(p.cmdline()[-4:])) for p in _survivors(pool)]}") from None
    finally:
        for process in _survivors(pool):  # leave no orphan behind, whatever the outcome
            process.kill()
        (gate / "release").touch()
        if worker.poll() is None:
            worker.kill()
        [again] = workers.start(redis_url, concurrency=2)  # takes the retry of 'blocks' once its lease expires
    result = run.wait(60)
    assert result.success, result.failed_assets
    assert result.step_results["blocks"].attempt == 2
    assert repo.load_node("blocks") in _children(again)


def _survivors(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive
