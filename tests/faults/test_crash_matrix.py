"""Crash matrix of the parallel executor: WHERE a step dies x HOW it dies -> its `failed_assets` text.

Whatever the cell, only the victim fails (its descendant is skipped), its parallel sibling and an
independent branch succeed, nothing is retried (the victim's policy is max_retries=0, which governs
infrastructure failures too) and the same pool serves the next run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from obstore.store import LocalStore

import rivers as rs
from rivers.executors.parallel import parallel_queue
from tests.pipelines import crash_pipeline as cp

pytestmark = pytest.mark.slow

EXECUTOR = rs.Executor.parallel(max_workers=2)  # the pool tests/e2e/test_parallel.py uses too
SKIPPED = "ExecutionError: Skipped: upstream dependency failed"
EXITED = "WorkerLost: worker process died: exited with code 3 while running 'victim'"
KILLED = "WorkerLost: worker process died: killed by signal 9 (SIGKILL) while running 'victim'"
SYS_EXIT = "ExecutionError: 'victim' called sys.exit(3) in a worker process"
CANNOT_LOAD = "SpecError: step 'victim': cannot load its code: "

MATRIX: dict[tuple[str, str], str] = {
    # spec load: the victim's module raises / exits / dies when a worker imports it
    ("spec", "raise"): CANNOT_LOAD + "ValueError: importing tests.pipelines.crash_unimportable failed",
    ("spec", "exit"): CANNOT_LOAD + "SystemExit: 3",
    ("spec", "os_exit"): EXITED,
    ("spec", "sigkill"): KILLED,
    # spec load: the reference no longer resolves in the worker (the asset is gone from its module)
    ("moved", "raise"): CANNOT_LOAD + "AttributeError: module 'tests.pipelines.crash_moved' has no attribute 'victim'",
    ("input", "raise"): "ValueError: load_input failed",
    ("input", "exit"): SYS_EXIT,
    ("input", "os_exit"): EXITED,
    ("input", "sigkill"): KILLED,
    ("function", "raise"): "ValueError: function failed",
    ("function", "exit"): SYS_EXIT,
    ("function", "os_exit"): EXITED,
    ("function", "sigkill"): KILLED,
    ("output", "raise"): "ValueError: handle_output failed",
    ("output", "exit"): SYS_EXIT,
    ("output", "os_exit"): EXITED,
    ("output", "sigkill"): KILLED,
    # report: the step's own error (ReportError) cannot be sent back. With "raise" it pickles but its
    # constructor breaks unpickling in the coordinator; otherwise pickling it exits or kills the worker.
    ("report", "raise"): "ReportError: report test (raise)",
    ("report", "exit"): "ReportError: report test (exit)",
    ("report", "os_exit"): EXITED,
    ("report", "sigkill"): KILLED,
}
INFRASTRUCTURE = {EXITED, KILLED}


@pytest.fixture
def unimportable_in_pool() -> Iterator[Path]:
    """The marker that makes tests.pipelines.crash_unimportable die on import in this process's pool."""
    marker = cp.marker_path(os.getpid())
    yield marker
    marker.unlink(missing_ok=True)


def repo_for(where: str, how: str, directory: Path, victim: Any = cp.victim) -> rs.CodeRepository:
    directory.mkdir()
    handler = cp.CrashingHandler(LocalStore(str(directory)), crash_where=where, crash_how=how)
    return rs.CodeRepository(
        [cp.upstream, victim, cp.after_victim, cp.sibling, cp.independent], default_executor=EXECUTOR,
        default_io_handler=handler, resources={"crash": cp.Crash(where=where, how=how)},
    )


@pytest.mark.parametrize("where, how", list(MATRIX), ids=[f"{w}-{h}" for w, h in MATRIX])
def test_a_step_dying_anywhere_fails_alone_with_a_clear_message(
    where: str, how: str, tmp_path: Path, unimportable_in_pool: Path
) -> None:
    victim = cp.victim
    if where == "spec":
        unimportable_in_pool.write_text(how)
        victim = importlib.import_module("tests.pipelines.crash_unimportable").victim
    elif where == "moved":
        victim = importlib.import_module("tests.pipelines.crash_moved").victim

    repo = repo_for(where, how, tmp_path / "run", victim)
    result = repo.materialize(raise_on_error=False)

    assert result.failed_assets == [("victim", MATRIX[where, how]), ("after_victim", SKIPPED)]
    failed = result.step_results["victim"]
    assert failed.status == "failed" and failed.attempt == 1  # max_retries=0: dead workers are not retried
    assert failed.error is not None and failed.error.infrastructure == (MATRIX[where, how] in INFRASTRUCTURE)
    for name in ("upstream", "sibling", "independent"):
        assert result.step_results[name].status == "succeeded", name
    assert (repo.load_node("sibling"), repo.load_node("independent")) == (11, "still here")

    unimportable_in_pool.unlink(missing_ok=True)
    again = repo_for("", "", tmp_path / "again").materialize(raise_on_error=False)
    assert again.success, again.failed_assets  # the pool still works for the next run
    assert os.getpid() not in {r.pid for r in again.step_results.values()}
    assert set(parallel_queue(EXECUTOR).pool.worker_pids())


@pytest.mark.timeout(30)  # before the fix the run hung
@pytest.mark.parametrize("how, expected", [
    ("raise", "ValueError: function failed"),
    ("exit", "ExecutionError: 'async_victim' called sys.exit(3) in an async step"),
    ("interrupt", "KeyboardInterrupt: "),
])
def test_an_async_step_that_exits_fails_alone_and_the_event_loop_keeps_serving(
    how: str, expected: str, tmp_path: Path
) -> None:
    """Async steps run on one event loop thread: a SystemExit escaping there used to end it (the run hung)."""
    def repo(crash: cp.Crash) -> rs.CodeRepository:
        return rs.CodeRepository(
            [cp.upstream, cp.async_victim, cp.independent], default_executor=EXECUTOR,
            default_io_handler=cp.CrashingHandler(LocalStore(str(tmp_path))), resources={"crash": crash},
        )

    result = repo(cp.Crash(where="function", how=how)).materialize(raise_on_error=False)
    assert result.failed_assets == [("async_victim", expected)]
    assert result.step_results["independent"].status == "succeeded"
    calm = repo(cp.Crash())
    assert calm.materialize(raise_on_error=False).success  # the loop survived
    assert calm.load_node("async_victim") == 2
