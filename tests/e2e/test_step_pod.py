"""Step pods (`rivers-worker --executor kubernetes --step JOB_ID`) stand on the workers' contract.

The test plays the pod launcher (tests/kubernetes has the real one), claiming each job from the kubernetes queue
with the workers' own claim script and starting one step-pod process per job, as a Job's pod would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

import rivers as rs
from rivers import defaults
from rivers.distributed.worker import CLAIM_SCRIPT
from rivers.queues import keys, rq_view
from tests.conftest import ROOT, Background
from tests.pipelines import distributed_pipeline as dp

pytestmark = pytest.mark.slow
LAUNCHER = "test-launcher"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}


def start_step_pod(url: str, job_id: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """What a Job's pod runs."""
    return subprocess.Popen([sys.executable, "-m", "rivers.cli.worker", "--executor", "kubernetes", "--step",
                             job_id, "--redis-url", url], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class PlayedLauncher:
    """Claims kubernetes jobs as a launcher would and runs a step-pod process for each."""

    def __init__(self, url: str, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.env = {**clean_env(), **(env or {})}
        self.client = redis.Redis.from_url(url)
        self.claim = self.client.register_script(CLAIM_SCRIPT)
        self.pods: dict[str, subprocess.Popen[bytes]] = {}  # job id -> its pod
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            popped = self.client.blmpop(0.2, 1, keys.queue_key("kubernetes"), direction="LEFT", count=10)
            if not popped:
                continue
            ids = [job_id.decode() for job_id in popped[1]]
            claimed = self.claim(args=[LAUNCHER, defaults.LEASE_MS, rq_view.rq_time(), time.time(),
                                       keys.queue_name("kubernetes"), *ids])
            for index in range(0, len(claimed), 3):
                job_id = claimed[index].decode()
                self.pods[job_id] = start_step_pod(self.url, job_id, self.env)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for pod in self.pods.values():
            pod.wait(30)


def test_step_pods_run_their_steps_and_report_like_workers(redis_url: str, tmp_path: Path) -> None:
    launcher = PlayedLauncher(redis_url)
    repo = dp.make_repo([dp.source, dp.doubled, dp.pid, dp.broken, dp.after_broken], tmp_path,
                        default_executor=rs.Executor.kubernetes(max_concurrent_steps=2))
    try:
        result = Background(repo).wait(90)
    finally:
        launcher.close()
    assert dict(result.failed_assets) == {
        "broken": "ValueError: boom from a worker (21)",
        "after_broken": "ExecutionError: Skipped: upstream dependency failed",
    }
    assert repo.load_node("doubled") == 42
    assert repo.load_node("pid") in {pod.pid for pod in launcher.pods.values()}  # ran in a pod, not here
    jobs = {k.decode(): v.decode() for k, v in launcher.client.hgetall(keys.run_jobs_key(result.run_id)).items()}
    codes = {step: launcher.pods[job_id].returncode for step, job_id in jobs.items()}
    assert codes == {"source": 0, "doubled": 0, "pid": 0, "broken": 1}
    assert result.step_results["broken"].attempt == 1  # a step's own error is not an infrastructure failure


def test_a_step_pod_for_a_job_no_launcher_claimed_refuses_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset(keys.job_key("unclaimed"), mapping={keys.JOB_DATA: b"x", keys.JOB_STATUS: keys.QUEUED})
    process = start_step_pod(redis_url, "unclaimed", clean_env())
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "step pod for job unclaimed: its job is queued, not claimed by a launcher" in output.decode()
    process = start_step_pod(redis_url, "nosuch", clean_env())
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "step pod for job nosuch: its job is gone" in output.decode()
