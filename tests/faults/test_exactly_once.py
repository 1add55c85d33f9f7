"""Exactly-once outcomes in distributed mode: every step's function runs once, stored values match the run.

Real redis-server, real rivers-worker and rivers-coordinator subprocesses; faults are SIGKILL / SIGSTOP of
real processes, and every wait polls with a deadline.

Expected to FAIL on the code before the worker/queue/coordinator rewrite (they document its bugs, they are
not xfail on purpose; select them with `-k "takeover or paused"`):
  - test_takeover_runs_every_step_exactly_once[early|middle|late]: results the dead coordinator had popped
    from the results list but not recorded are lost, so the new owner runs those steps again.
  - test_paused_worker_does_not_overwrite_the_accepted_attempt[during_retry|after_run]: a worker paused past
    its lease resumes and stores the value of its abandoned attempt over (or beside) the accepted one.
Expected to pass: the control run and the neighbour test (killed between storing a value and reporting it).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

import rivers as rs
from rivers.queues import keys
from tests.conftest import Background, CoordinatorProcesses, WorkerProcesses
from tests.pipelines import exactly_once_pipeline as eo
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

REPO_REF = "tests.pipelines.exactly_once_pipeline:repo"


def chain_coordinators(redis_url: str, tmp_path: Path) -> CoordinatorProcesses:
    """rivers-coordinator subprocesses serving the 200-step repository stored under their `directory`."""
    directory = tmp_path / "data"
    directory.mkdir()
    return CoordinatorProcesses(redis_url, directory, REPO_REF, env={eo.ENV_DIR: str(directory)})


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[CoordinatorProcesses]:
    procs = chain_coordinators(redis_url, tmp_path)
    yield procs
    procs.close()


def chain_problems(repo: rs.CodeRepository) -> list[str]:
    """Every way the 200 chain steps missed exactly-once: executions, stored values, writes."""
    counter = eo.counter_of(repo)
    log_dir = eo.write_log_dir(repo)
    problems = []
    runs = {step: counter.count(step) for step in eo.STEP_NAMES}
    wrong_runs = {step: n for step, n in runs.items() if n != 1}
    if wrong_runs:
        problems.append(f"{len(wrong_runs)} of {len(runs)} step functions did not run exactly once "
                        f"(step: executions): {_first(wrong_runs)}")
    writes = {step: len(eo.LoggedPickleIOHandler.writes(log_dir, step)) for step in eo.STEP_NAMES}
    wrong_writes = {step: n for step, n in writes.items() if n != 1}
    if wrong_writes:
        problems.append(f"{len(wrong_writes)} values were not stored exactly once (step: writes): "
                        f"{_first(wrong_writes)}")
    wrong_values = {}
    for step, expected in eo.EXPECTED.items():
        try:
            value = repo.load_node(step)
        except FileNotFoundError:
            value = None
        if value != expected:
            wrong_values[step] = (value, expected)
    if wrong_values:
        problems.append(f"{len(wrong_values)} stored values are wrong (step: (stored, expected)): "
                        f"{_first(wrong_values)}")
    return problems


def _first(mapping: dict[str, Any], count: int = 8) -> str:
    shown = dict(list(mapping.items())[:count])
    return f"{shown}{' ...' if len(mapping) > count else ''}"


def test_control_a_served_run_without_faults_runs_every_step_exactly_once(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses
) -> None:
    """The baseline of the takeover tests: same pipeline, same processes, nobody killed."""
    workers.start(redis_url, count=2, concurrency=2)
    coordinators.start()
    repo = eo.make_repo(directory=coordinators.directory)
    handle = repo.submit()
    result = handle.wait(timeout=60)
    assert result.success, result.failed_assets
    assert handle.status == "succeeded"
    assert not chain_problems(repo)


@pytest.mark.usefixtures("short_lease")
@pytest.mark.parametrize("kill_after", [10, 100, 190], ids=["early", "middle", "late"])
def test_takeover_runs_every_step_exactly_once(
    redis_url: str, workers: WorkerProcesses, coordinators: CoordinatorProcesses, kill_after: int
) -> None:
    """KNOWN BUG before the rewrite. SIGKILL the coordinator owning a 200-step run once `kill_after` steps
    are recorded as finished; the other coordinator takes the run over: it must adopt what is queued, running
    and reported, so that every step function runs exactly once and every value is stored once and right. The
    chain's steps go through armed jobs (queues/armed.py), so a kill also finds jobs armed in Redis: the test
    checks some were."""
    workers.start(redis_url, count=2, concurrency=2)
    processes = [coordinators.start(), coordinators.start()]
    names = {coordinators.name_of(process): process for process in processes}
    repo = eo.make_repo(directory=coordinators.directory)
    counter = eo.counter_of(repo)
    client = redis.Redis.from_url(redis_url)
    handle = repo.submit()
    run_key, steps_key = keys.run_key(handle.run_id), keys.run_steps_key(handle.run_id)

    owner = wait_for(lambda: client.hget(run_key, "owner"), 30, message="a coordinator to own the run").decode()
    victim = names[owner]
    [survivor] = [name for name in names if name != owner]
    wait_for(lambda: client.hlen(steps_key) >= kill_after, 60, interval=0.005,
             message=f"{kill_after} steps to be recorded as finished")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    recorded = client.hlen(steps_key)
    started = sum(1 for step in eo.STEP_NAMES if counter.count(step))
    status = client.hget(run_key, "status")
    assert status == b"running", f"the kill point was missed: the run was already {status!r} at the kill"

    wait_for(lambda: client.hget(run_key, "owner") == survivor.encode(), 30,
             message="the other coordinator to take the run over")
    result = handle.wait(timeout=60)
    armed = [key for key in client.scan_iter(match=keys.RQ_JOB_PREFIX + "*") if client.hget(key, keys.JOB_AFTER)]
    client.close()
    assert armed, "no step went through an armed job: this run did not test takeover with jobs armed in Redis"

    problems = chain_problems(repo)
    if not result.success:
        problems.insert(0, f"the run failed: {_first(dict(result.failed_assets))}")
    assert not problems, (f"killed {owner} with {recorded} steps recorded and {started} started; "
                          f"{survivor} took over:\n  " + "\n  ".join(problems))
    assert handle.status == "succeeded"


@pytest.mark.usefixtures("fast_watch", "short_lease")
@pytest.mark.parametrize("resume", ["during_retry", "after_run"])
def test_paused_worker_does_not_overwrite_the_accepted_attempt(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path, resume: str
) -> None:
    """KNOWN BUG before the rewrite. SIGSTOP the whole worker running `slow` (its first execution returns 1)
    past its lease; the coordinator retries `slow` on the other worker (returns 2). SIGCONT the paused tree
    while the retry runs, or after the run ended. The stored values must be the accepted attempt's:
    after_slow == 10 * slow == 10 * (attempt the run reports), and the paused worker must store nothing."""
    workers.start(redis_url, count=2, concurrency=2)
    repo = eo.make_repo(eo.PAUSE_ASSETS, tmp_path / "data")
    counter = eo.counter_of(repo)
    run = Background(repo)
    wait_for(lambda: counter.count("slow") >= 1, 60, message="'slow' to start")
    first_pid = counter.executions("slow")[0][0]
    victim = workers.owner_of(first_pid)
    tree = [psutil.Process(victim.pid), *workers.tree(victim)]
    paused_pids = {process.pid for process in tree}
    for process in tree:
        process.suspend()  # SIGSTOP, parent first: nothing of the worker runs any more
    result: rs.RunResult | None = None
    try:
        wait_for(lambda: counter.count("slow") >= 2, 30, message="the coordinator to retry 'slow' on the other worker")
        if resume == "after_run":
            result = run.wait(60)
    finally:
        for process in reversed(tree):
            process.resume()  # SIGCONT
    resumed_at = time.time()
    victim.send_signal(signal.SIGTERM)  # first SIGTERM: it ends its (abandoned) step, whatever that does, and exits
    victim.wait(30)  # from here on, the paused worker can store nothing more
    if result is None:
        result = run.wait(60)

    assert result.success, result.failed_assets
    executions = counter.executions("slow")
    assert len(executions) == 2 and executions[1][0] not in paused_pids, executions
    accepted = result.step_results["slow"].attempt
    slow_value, after_value = repo.load_node("slow"), repo.load_node("after_slow")
    stale_writes = [(pid, at) for pid, at in eo.LoggedPickleIOHandler.writes(eo.write_log_dir(repo), "slow")
                    if pid in paused_pids]
    problems = []
    if after_value != 10 * slow_value:
        problems.append(f"stored after_slow={after_value} is not 10 * stored slow={slow_value}")
    if slow_value != accepted:
        problems.append(f"stored slow={slow_value}, but the run accepted attempt {accepted} (value {accepted})")
    if stale_writes:
        retry_at = executions[1][1]
        problems.append(f"the paused worker stored 'slow' {[round(at - retry_at, 2) for _, at in stale_writes]} s "
                        f"after the retry started (it was resumed {round(resumed_at - retry_at, 2)} s after)")
    if counter.count("after_slow") != 1:
        problems.append(f"after_slow ran {counter.count('after_slow')} times")
    assert not problems, "\n  ".join([f"resumed {resume}:", *problems])


@pytest.mark.usefixtures("fast_watch", "short_lease")
def test_worker_killed_between_storing_and_reporting_costs_one_consistent_retry(
    redis_url: str, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """Neighbour case: the worker dies after `written` stored its value but before it reported. The step is
    retried once (its function runs twice: the first report never came), and what is stored in the end is
    the accepted attempt's value, which its downstream read."""
    workers.start(redis_url, count=2, concurrency=1)
    repo = eo.make_repo(eo.STALL_ASSETS, tmp_path / "data", stall=["written"])
    counter = eo.counter_of(repo)
    log_dir = eo.write_log_dir(repo)
    run = Background(repo)
    wait_for(lambda: eo.LoggedPickleIOHandler.writes(log_dir, "written"), 60,
             message="'written' to store its value (its handler then stalls)")
    victim = workers.owner_of(eo.LoggedPickleIOHandler.writes(log_dir, "written")[0][0])
    workers.kill(victim)
    result = run.wait(60)

    assert result.success, result.failed_assets
    assert result.step_results["written"].attempt == 2
    assert counter.count("written") == 2 and counter.count("base") == 1 and counter.count("after_written") == 1
    assert repo.load_node("written") == 205  # the second execution's value
    assert repo.load_node("after_written") == 206
    assert len(eo.LoggedPickleIOHandler.writes(log_dir, "written")) == 2
