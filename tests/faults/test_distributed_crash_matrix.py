"""A smaller crash matrix for rivers-worker processes fed through Redis (the pipelines of test_crash_matrix).

The worker is started with CRASH_PIPELINE_IMPORT=raise, so tests.pipelines.crash_unimportable cannot
be imported in its pool; the other cells do not use that module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.conftest import WorkerProcesses
from tests.pipelines import crash_pipeline as cp

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
