"""Fencing on run ownership (issue 12, part 1): a coordinator paused past its owner lease stands down.

Two rivers-coordinator processes and two rivers-worker processes (concurrency 2) serve the 200-step
exactly-once pipeline. Once `pause_after` steps are recorded as finished, the coordinator owning the run is
SIGSTOPped (the whole process: every thread stops); the other one takes the run over when the owner lease
(RIVERS_LEASE_MS: 3 s here) lapses and records more steps; then the paused one is SIGCONTed while the run is
still going.

The run must finish and succeed, every step function must have run exactly once and stored its value once
and right, the resumed coordinator must log `run.stood_down` for the run, and it must go on serving: with the
other coordinator gone, it serves a second run. Real redis-server and processes; every wait polls with a
deadline.

Expected to FAIL before the fencing lands: the resumed coordinator goes on driving the run beside the new
owner, so succeeded steps run a second time and/or the run never finishes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from rivers.queues import keys
from tests.conftest import CoordinatorProcesses, WorkerProcesses
from tests.faults.test_exactly_once import _first, chain_coordinators, chain_problems
from tests.pipelines import exactly_once_pipeline as eo
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

FINISH_TIMEOUT_S = 60.0  # from the resume; a clean run of the pipeline takes about a second
STOOD_DOWN_TIMEOUT_S = 15.0


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[CoordinatorProcesses]:
    procs = chain_coordinators(redis_url, tmp_path)
    yield procs
    procs.close()  # SIGCONTs one a failure left stopped, then SIGKILLs


def _log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a coordinator's log (anything else, e.g. a traceback, is skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            events.append(entry)
    return events


def _stood_down(path: Path, run_id: str) -> bool:
    return any(e.get("event") == "run.stood_down" and e.get("run_id") == run_id for e in _log_events(path))


def _tree(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The coordinator and whatever it started: SIGSTOP freezes all of it, as a frozen machine would."""
    root = psutil.Process(process.pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.usefixtures("short_lease")
@pytest.mark.parametrize("pause_after", [20, 100], ids=["early", "middle"])
def test_paused_owner_stands_down_and_the_run_finishes_exactly_once(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses, pause_after: int
) -> None:
    workers.start(redis_url, count=2, concurrency=2)
    processes = [coordinators.start(), coordinators.start()]
    names = {coordinators.name_of(process): process for process in processes}
    repo = eo.make_repo(directory=coordinators.directory)
    client = redis.Redis.from_url(redis_url)
    handle = repo.submit()
    run_id = handle.run_id
    run_key, steps_key = keys.run_key(run_id), keys.run_steps_key(run_id)

    owner = wait_for(lambda: client.hget(run_key, "owner"), 30, message="a coordinator to own the run").decode()
    paused = names[owner]
    [survivor_name] = [name for name in names if name != owner]
    survivor = names[survivor_name]
    paused_log = coordinators.log_path(coordinators.processes.index(paused))

    wait_for(lambda: client.hlen(steps_key) >= pause_after, 60, interval=0.002,
             message=f"{pause_after} steps to be recorded as finished")
    tree = _tree(paused)
    for process in tree:
        process.suspend()  # SIGSTOP, parent first
    try:
        at_pause = client.hlen(steps_key)
        status = client.hget(run_key, "status")
        assert status == b"running", f"the pause point was missed: the run was already {status!r} at the pause"
        paused_at = time.monotonic()

        wait_for(lambda: client.hget(run_key, "owner") == survivor_name.encode(), 30, interval=0.005,
                 message=f"{survivor_name} to take the run over from the paused {owner}")
        taken_over_after = time.monotonic() - paused_at
        wait_for(lambda: client.hlen(steps_key) > at_pause, 30, interval=0.002,
                 message=f"{survivor_name} to record more steps than the {at_pause} recorded at the pause")
        status = client.hget(run_key, "status")
        at_resume = client.hlen(steps_key)
    finally:
        for process in reversed(tree):
            process.resume()  # SIGCONT
    assert status == b"running", (f"the resume point was missed: the run was already {status!r} when {owner} "
                                  f"was to be resumed ({at_resume} steps recorded)")
    resumed_at = time.monotonic()

    context = (f"paused {owner} with {at_pause} steps recorded; {survivor_name} took over after "
               f"{taken_over_after:.1f} s; resumed {owner} with {at_resume} steps recorded")
    problems: list[str] = []
    result = None
    try:
        result = handle.wait(timeout=FINISH_TIMEOUT_S)
    except TimeoutError:
        problems.append(f"the run never finished: still {client.hget(run_key, 'status')!r} with "
                        f"{client.hlen(steps_key)} steps recorded {FINISH_TIMEOUT_S:g} s after the resume")
    if result is not None and not result.success:
        problems.append(f"the run failed: {_first(dict(result.failed_assets))}")
    if result is not None and handle.status != "succeeded":
        problems.append(f"the run's status is {handle.status!r}")
    problems.extend(chain_problems(repo))

    remaining = max(2.0, STOOD_DOWN_TIMEOUT_S - (time.monotonic() - resumed_at))
    try:
        wait_for(lambda: _stood_down(paused_log, run_id), remaining, interval=0.05,
                 message="run.stood_down in the resumed coordinator's log")
    except AssertionError:
        problems.append(f"the resumed {owner} never logged run.stood_down for run {run_id}")

    if paused.poll() is not None:
        problems.append(f"the resumed {owner} exited with {paused.returncode}")
    log_text = paused_log.read_text(errors="replace")
    if "Traceback" in log_text:
        problems.append(f"the resumed {owner}'s log has a traceback:\n{log_text[-3000:]}")
    assert not problems, f"{context}:\n  " + "\n  ".join(problems)

    # The resumed coordinator goes on serving: with the other one gone, it alone can serve a new run.
    survivor.send_signal(signal.SIGKILL)
    survivor.wait(10)
    second = repo.submit(selection=["c00_s0", "c00_s1"])
    second_result = second.wait(timeout=30)
    assert second_result.success, second_result.failed_assets
    assert client.hget(keys.run_key(second.run_id), "owner") == owner.encode()
    assert paused.poll() is None
    client.close()
