"""rivers-coordinator serving submitted runs, and taking over a run whose coordinator was SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rivers.queues import keys
from tests.conftest import ROOT, CoordinatorProcesses, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[CoordinatorProcesses]:
    procs = CoordinatorProcesses(redis_url, tmp_path, "tests.pipelines.distributed_pipeline:served_repo",
                                 env={"DIST_TEST_DIR": str(tmp_path)})
    yield procs
    procs.close()


def test_a_submitted_run_is_served_and_recorded(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url)
    coordinators.start()
    repo = dp.make_repo([dp.source, dp.broken, dp.after_broken], tmp_path)
    handle = repo.submit(selection=["source", "broken", "after_broken"])  # the served repo has more
    result = handle.wait(timeout=60)
    assert handle.status == "failed"
    assert dict(result.failed_assets) == {"broken": "ValueError: boom from a worker (21)",
                                          "after_broken": "ExecutionError: Skipped: upstream dependency failed"}
    shown = subprocess.run([sys.executable, "-m", "rivers.cli.main", "run", handle.run_id], cwd=ROOT,
                           capture_output=True, text=True, check=False, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"run {handle.run_id}: failed" in shown.stdout and "ValueError: boom" in shown.stdout
    listed = subprocess.run([sys.executable, "-m", "rivers.cli.main", "runs"], cwd=ROOT, capture_output=True,
                            text=True, check=False, timeout=60)
    assert handle.run_id in listed.stdout


@pytest.mark.usefixtures("short_lease")
def test_a_run_whose_coordinator_died_is_resumed_without_rerunning_finished_steps(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url, concurrency=2)
    first = coordinators.start()
    repo = dp.make_repo([dp.source, dp.doubled, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    handle = repo.submit(selection=["source", "doubled", "gated", "after_gated"])
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: scratch.lines("gated") and client.hexists(keys.run_steps_key(handle.run_id), "doubled"), 60,
             message="'doubled' to finish while 'gated' runs")
    first_owner = client.hget(keys.run_key(handle.run_id), "owner")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    coordinators.start()
    wait_for(lambda: client.hget(keys.run_key(handle.run_id), "owner") not in (None, first_owner), 30,
             message="the second coordinator to take the run over")
    (Path(scratch.dir) / "open").touch()
    result = handle.wait(timeout=60)
    assert result.success, result.failed_assets
    assert repo.load_node("after_gated") == 22
    for step in ("source", "doubled", "gated", "after_gated"):  # each ran exactly once
        assert len(scratch.lines(step)) == 1, step



def test_cancel_fails_running_steps_and_skips_the_rest(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses, tmp_path: Path
) -> None:
    workers.start(redis_url)
    coordinators.start()
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    scratch = repo.resources["scratch"]
    handle = repo.submit(selection=["source", "gated", "after_gated"])
    wait_for(lambda: scratch.lines("gated"), 60, message="the gated step to start")
    handle.cancel()
    result = handle.wait(timeout=30)
    (Path(scratch.dir) / "open").touch()  # let the abandoned step end so that its worker can stop
    assert handle.status == "cancelled"
    assert dict(result.failed_assets) == {"gated": "ExecutionError: the run was cancelled",
                                          "after_gated": "ExecutionError: Skipped: upstream dependency failed"}
    assert not scratch.lines("after_gated")
