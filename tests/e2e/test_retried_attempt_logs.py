"""A retried step's failed attempt on a rivers-worker keeps its logs: `rivers logs` shows both attempts (`flaky`,
`flaky#2`) and `rivers run` lists the failed one, for submitted runs and for runs made in a process with
RIVERS_REDIS_URL set (whose logs live only in Redis when no runs directory is written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CoordinatorProcesses, WorkerProcesses
from tests.e2e.test_step_logs import log_lines, rivers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REPO = "tests.pipelines.step_logs_pipeline:retried"
BOTH = [("flaky", "INFO", "flaky: first attempt fails"), ("flaky#2", "INFO", "flaky: second attempt works")]


def failed_attempts(run_id: str, env: dict[str, str], cwd: Path) -> list[dict[str, object]]:
    shown = rivers("run", run_id, "--json", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    [flaky] = json.loads(shown.stdout)["step_runs"]
    assert flaky["status"] == "succeeded" and flaky["attempts"] == 2
    return list(flaky.get("failures", []))


def test_submitted_run_keeps_the_failed_attempts_logs(redis_url: str, workers: WorkerProcesses,
                                                      tmp_path: Path) -> None:
    env = {"RIVERS_REDIS_URL": redis_url}
    workers.start(redis_url, env={"FLAKY_MARKER": str(tmp_path / "flaky-ran")})
    coordinators = CoordinatorProcesses(redis_url, tmp_path, REPO)
    coordinators.start()
    try:
        submitted = rivers("submit", REPO, "--wait", env=env, cwd=tmp_path)
    finally:
        coordinators.close()
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = submitted.stdout.split()[0]
    assert log_lines(rivers("logs", run_id, env=env, cwd=tmp_path).stdout) == BOTH
    [failure] = failed_attempts(run_id, env, tmp_path)
    assert failure["attempt"] == 1 and failure["error"] == "RuntimeError: first attempt"


def test_run_made_in_a_process_keeps_the_failed_attempts_logs_in_redis(redis_url: str, workers: WorkerProcesses,
                                                                       tmp_path: Path) -> None:
    env = {"RIVERS_REDIS_URL": redis_url}
    workers.start(redis_url, env={"FLAKY_MARKER": str(tmp_path / "flaky-ran")})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    code = ("from tests.pipelines.step_logs_pipeline import retried\n"
            "result = retried.materialize()\nprint(result.run_id, result.success)")
    made = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**environ, **env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    run_id, success = made.stdout.split()
    assert success == "True"
    assert not (tmp_path / ".rivers").exists()  # no runs directory here: `rivers logs` reads Redis
    assert log_lines(rivers("logs", run_id, env=env, cwd=tmp_path).stdout) == BOTH
    [failure] = failed_attempts(run_id, env, tmp_path)
    assert failure["attempt"] == 1 and failure["error"] == "RuntimeError: first attempt"
