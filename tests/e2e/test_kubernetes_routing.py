"""Executor.kubernetes(): steps go to the kubernetes queue through Redis, at most max_concurrent_steps at once.

A rivers Worker consuming the kubernetes queue stands in for the pod launcher here (tests/kubernetes has the
real one), which is enough to see what the coordinator sends and when.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

import rivers as rs
from rivers.coordinator.state import RunState
from rivers.plan import build_plan
from rivers.queues import keys
from rivers.queues.redis import live_workers
from rivers.results import OutputResult, StepResult
from tests.conftest import ROOT, wake_stopping
from tests.pipelines import kubernetes_cap_pipeline as kp
from tests.redis_server import wait_for

CAP = 3


def test_without_redis_kubernetes_steps_fail_at_once_saying_so(tmp_path: Path) -> None:
    repo = kp.repo_in(tmp_path, rs.Executor.kubernetes(max_concurrent_steps=CAP))
    result = repo.materialize(raise_on_error=False)
    assert not result.success
    assert len(result.failed_assets) == kp.WIDTH
    for name, message in result.failed_assets:
        assert message == (f"ConfigurationError: Kubernetes steps travel through Redis: set RIVERS_REDIS_URL (and "
                           f"run `rivers-worker --executor kubernetes`) to run '{name}' on Kubernetes")
        assert result.step_results[name].attempt == 1  # not retried: configuration, not infrastructure


def test_run_state_admits_at_most_max_concurrent_steps(tmp_path: Path) -> None:
    repo = kp.repo_in(tmp_path, rs.Executor.kubernetes(max_concurrent_steps=CAP))
    graph = repo._resolve()
    plan = build_plan(graph, set(graph.producer), rs.Executor.kubernetes(max_concurrent_steps=CAP), True)
    state = RunState(plan, executor_limits={"kubernetes": CAP})
    ready = state.begin()
    assert len(ready) == kp.WIDTH
    admitted = [step for step in ready if state.admit(step) is not None]
    assert len(admitted) == CAP
    waiting = [step for step in ready if step not in admitted]
    done = StepResult(run_id="r", step_key=admitted[0].key, attempt=1, status="succeeded",
                      outputs=[OutputResult(name=admitted[0].key, status="succeeded")])
    settled = state.settle(done, 0.0)
    assert settled.ready == waiting[:1]  # the first waiting step gets the place that came free
    assert state.admit(waiting[0]) == 1
    assert state.admit(waiting[1]) is None  # full again: CAP running


@pytest.fixture
def kubernetes_consumer(redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A rivers Worker on the kubernetes queue (what the pod launcher will be), with more slots than the cap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    code = ("import sys; from rivers.distributed.worker import Worker; "
            f"sys.exit(Worker({redis_url!r}, 'kubernetes', 6).run())")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection = redis.Redis.from_url(redis_url)
    wait_for(lambda: live_workers(connection, "kubernetes"), 30, message="the kubernetes consumer to register")
    yield process
    children = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    wake_stopping([process], {process.pid: redis_url})
    process.wait(20)
    wait_for(lambda: not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], 15,
             message="the consumer's step processes to exit")


@pytest.mark.slow
def test_kubernetes_steps_go_through_redis_capped_by_the_coordinator(
    redis_url: str, kubernetes_consumer: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    repo = kp.repo_in(tmp_path, rs.Executor.kubernetes(max_concurrent_steps=CAP))
    result = repo.materialize()
    assert result.success, result.failed_assets
    consumer_pids = {child.pid for child in psutil.Process(kubernetes_consumer.pid).children(recursive=True)}
    assert {repo.load_node(f"wide_{i}") for i in range(kp.WIDTH)} <= consumer_pids
    together = [int(line) for line in (tmp_path / "scratch" / "together").read_text().split()]
    assert max(together) == CAP  # the cap is reached and never passed, though the consumer has 6 slots
    jobs = redis.Redis.from_url(redis_url).hgetall(keys.run_jobs_key(result.run_id))
    assert len(jobs) == kp.WIDTH
