"""`rivers submit`, `rivers cancel`, `rivers runs`, `rivers run` as an operator runs them: real `rivers` and
`rivers-coordinator` subprocesses, real rivers-workers, a real redis-server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rivers.queues import keys
from tests.conftest import CoordinatorProcesses, WorkerProcesses
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "tests.pipelines.submit_pipeline"
SHOP, KITCHEN, WAREHOUSE, PANTRY = (f"{PIPELINE}:{name}" for name in ("shop", "kitchen", "warehouse", "pantry"))


def rivers(url: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    environ.update({"RIVERS_REDIS_URL": url, "RIVERS_LOG_FORMAT": "json", **(env or {})})
    return subprocess.run([sys.executable, "-m", "rivers.cli.main", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=timeout, check=False)


def runs_json(url: str, *args: str) -> list[dict[str, Any]]:
    result = rivers(url, "runs", "--json", *args)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def run_json(url: str, run_id: str) -> dict[str, Any]:
    result = rivers(url, "run", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def run_id_of(result: subprocess.CompletedProcess[str]) -> str:
    first = result.stdout.splitlines()[0] if result.stdout else ""
    assert re.fullmatch(r"[0-9a-f-]{36}", first), (result.stdout, result.stderr)
    return first


def statuses(stdout: str) -> dict[str, str]:
    """step -> status, from the summary table `submit --wait` prints (the one `materialize` prints)."""
    return dict(re.findall(r"^│ (\S+)\s.*?│ (succeeded|failed|skipped|running|pending)\s", stdout, re.MULTILINE))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def coordinators(url: str, directory: Path, repo_ref: str,
                 env: dict[str, str] | None = None) -> CoordinatorProcesses:
    sub = directory / repo_ref.replace(":", "_")
    sub.mkdir(exist_ok=True)
    return CoordinatorProcesses(url, sub, repo_ref, env)


def test_a_run_for_another_repository_is_left_alone_and_reported_unserved(
    redis_url: str, client: redis.Redis, tmp_path: Path,
) -> None:
    shop = coordinators(redis_url, tmp_path, SHOP)
    try:
        process = shop.start()
        shop.name_of(process)  # serving
        result = rivers(redis_url, "submit", KITCHEN, "--wait", env={"RIVERS_UNSERVED_TIMEOUT_S": "1"})
        run_id = run_id_of(result)
        message = f"no rivers-coordinator serves {KITCHEN}; start one with rivers-coordinator --repo {KITCHEN}"
        assert result.returncode == 1, result.stderr
        assert message in result.stderr
        record = client.hgetall(keys.run_key(run_id))
        assert record[b"status"] == b"failed" and b"owner" not in record  # the shop coordinator never took it
        assert client.llen(keys.run_events_key(run_id)) == 0
        assert run_id not in shop.log_path(0).read_text()
        listed = {run["run_id"]: run for run in runs_json(redis_url)}
        assert listed[run_id]["status"] == "failed"
        assert listed[run_id]["error"] == message
        assert listed[run_id]["repository"] == KITCHEN
        table = rivers(redis_url, "runs").stdout
        assert table.splitlines()[0].split()[:3] == ["RUN", "ID", "STATUS"]
        assert "no rivers-coordinator serves" in table
    finally:
        shop.close()


def test_two_coordinators_serve_their_own_repositories(redis_url: str, client: redis.Redis, tmp_path: Path) -> None:
    shop, kitchen = coordinators(redis_url, tmp_path, SHOP), coordinators(redis_url, tmp_path, KITCHEN)
    try:
        names = {SHOP: shop.name_of(shop.start()), KITCHEN: kitchen.name_of(kitchen.start())}
        for _ in range(2):  # every run goes to its own repository's coordinator, never to the other
            served = rivers(redis_url, "submit", SHOP, "--wait")
            assert served.returncode == 0, served.stderr
            assert statuses(served.stdout) == {"raw": "succeeded", "cooked": "succeeded"}
            assert re.search(r"^run [0-9a-f-]{36} succeeded: success=True", served.stdout, re.MULTILINE)
            assert client.hget(keys.run_key(run_id_of(served)), "owner").decode() == names[SHOP]
            failing = rivers(redis_url, "submit", KITCHEN, "--wait")
            assert failing.returncode == 1, failing.stderr
            assert statuses(failing.stdout) == {"raw": "succeeded", "cooked": "succeeded", "burnt": "failed"}
            assert "ValueError: burnt at 1" in failing.stdout
            assert client.hget(keys.run_key(run_id_of(failing)), "owner").decode() == names[KITCHEN]
    finally:
        shop.close()
        kitchen.close()


def test_runs_and_run_json(redis_url: str, tmp_path: Path) -> None:
    kitchen = coordinators(redis_url, tmp_path, KITCHEN)
    try:
        kitchen.name_of(kitchen.start())
        failed = run_id_of(rivers(redis_url, "submit", KITCHEN, "--wait"))
        selected = rivers(redis_url, "submit", KITCHEN, "--select", "cooked", "--include-upstream", "--wait")
        assert selected.returncode == 0, selected.stderr
        succeeded = run_id_of(selected)
    finally:
        kitchen.close()
    runs = runs_json(redis_url)
    assert [run["run_id"] for run in runs] == [succeeded, failed]  # newest first
    for run in runs:
        assert {"run_id", "status", "repository", "kind", "created_at", "started_at", "ended_at", "duration_s",
                "steps", "error"} <= set(run)
        assert run["repository"] == KITCHEN and run["kind"] == "submitted"
        assert run["duration_s"] >= 0 and run["ended_at"] >= run["started_at"] >= run["created_at"]
    by_id = {run["run_id"]: run for run in runs}
    assert by_id[failed]["steps"] == {"total": 3, "succeeded": 2, "failed": 1, "skipped": 0, "running": 0,
                                      "pending": 0}
    assert by_id[failed]["error"] == "burnt: ValueError: burnt at 1"
    assert by_id[succeeded]["error"] is None and by_id[succeeded]["steps"]["succeeded"] == 2
    assert [run["run_id"] for run in runs_json(redis_url, "--status", "failed")] == [failed]
    assert [run["run_id"] for run in runs_json(redis_url, "--limit", "1")] == [succeeded]

    detail = run_json(redis_url, failed)
    steps = {step["step"]: step for step in detail["step_runs"]}
    assert list(steps) == ["raw", "cooked", "burnt"]  # plan order
    assert steps["burnt"]["status"] == "failed" and steps["burnt"]["reason"] == "error"
    assert steps["burnt"]["error"] == "ValueError: burnt at 1" and steps["burnt"]["attempts"] == 1
    assert steps["raw"]["status"] == "succeeded" and "reason" not in steps["raw"]
    assert all(step["worker"] and step["duration_s"] >= 0 for step in steps.values())
    shown = rivers(redis_url, "run", failed).stdout
    assert re.search(r"^STEP\s+STATUS\s+ATTEMPTS\s+WORKER\s+REASON\s+DURATION\s+ERROR$", shown, re.MULTILINE)
    assert re.search(r"^burnt\s+failed\s+1\s+.*\berror\s+.*ValueError: burnt at 1$", shown, re.MULTILINE)


def test_run_lists_every_failed_attempt_of_a_retried_step(redis_url: str, tmp_path: Path) -> None:
    pantry = coordinators(redis_url, tmp_path, PANTRY)
    try:
        name = pantry.name_of(pantry.start())
        result = rivers(redis_url, "submit", PANTRY, "--wait")
    finally:
        pantry.close()
    assert result.returncode == 0, result.stderr
    [flaky] = run_json(redis_url, run_id_of(result))["step_runs"]
    assert flaky["status"] == "succeeded" and flaky["attempts"] == 2 and flaky["worker"] == f"{name} (in process)"
    [failure] = flaky["failures"]
    assert failure["attempt"] == 1 and failure["reason"] == "error"
    assert failure["error"] == "ConnectionError: the first attempt of this process fails"
    shown = rivers(redis_url, "run", run_id_of(result)).stdout
    assert re.search(r"^retried attempts:\nSTEP\s+ATTEMPT.*\nflaky\s+1\s+.*ConnectionError", shown, re.MULTILINE), shown


def test_cancel_withdraws_queued_steps_and_ends_the_run_cancelled(
    redis_url: str, client: redis.Redis, tmp_path: Path, workers: WorkerProcesses,
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    env = {"SUBMIT_TEST_GATE": str(gate), "SUBMIT_TEST_STORE": str(tmp_path / "store")}
    workers.start(redis_url, concurrency=1, env=env)  # one slot: one step runs, one is prefetched, one is queued
    warehouse = coordinators(redis_url, tmp_path, WAREHOUSE, env)
    try:
        warehouse.name_of(warehouse.start())
        run_id = run_id_of(rivers(redis_url, "submit", WAREHOUSE))
        wait_for(lambda: client.llen(keys.queue_key("parallel")) == 1, 30, message="one slow step queued")
        cancelled = rivers(redis_url, "cancel", run_id, "--wait", timeout=30)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"run {run_id} cancelled" in cancelled.stdout
        assert client.llen(keys.queue_key("parallel")) == 0  # the queued step was withdrawn
        detail = run_json(redis_url, run_id)
        assert detail["status"] == "cancelled"
        steps = {step["step"]: step for step in detail["step_runs"]}
        for key in ("slow", "also_slow", "slowest"):
            assert steps[key]["status"] == "failed" and steps[key]["reason"] == "cancelled", steps[key]
        assert steps["after_slow"]["status"] == "skipped"
        assert [run["run_id"] for run in runs_json(redis_url, "--status", "cancelled")] == [run_id]
        again = rivers(redis_url, "cancel", run_id)
        assert again.returncode == 0 and "already ended: cancelled" in again.stdout
    finally:
        gate.unlink()
        warehouse.close()


def test_cancel_of_a_queued_run_ends_it_and_an_unknown_id_exits_2(redis_url: str, client: redis.Redis) -> None:
    run_id = run_id_of(rivers(redis_url, "submit", SHOP))  # no coordinator: it stays queued
    result = rivers(redis_url, "cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert client.hget(keys.run_key(run_id), "status") == b"cancelled"
    assert client.sismember(keys.RUNS_ACTIVE, run_id) == 0
    unknown = rivers(redis_url, "cancel", "no-such-run")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("rivers: error: no run 'no-such-run' in Redis")
    assert rivers(redis_url, "run", "no-such-run").returncode == 2


def test_an_embedded_run_with_a_redis_url_is_listed(redis_url: str) -> None:
    result = rivers(redis_url, "materialize", KITCHEN)
    assert result.returncode == 1, result.stderr
    [run] = runs_json(redis_url)
    assert run["kind"] == "embedded" and run["status"] == "failed" and run["repository"] == KITCHEN
    assert run["error"] == "burnt: ValueError: burnt at 1"
    assert run["steps"]["total"] == 3 and run["steps"]["failed"] == 1
    assert re.search(rf"^run {run['run_id']} failed", result.stdout, re.MULTILINE)  # the id materialize printed
    steps = {step["step"]: step for step in run_json(redis_url, run["run_id"])["step_runs"]}
    assert steps["burnt"]["reason"] == "error" and steps["cooked"]["status"] == "succeeded"


def test_repo_submit_names_its_repository_and_wait_reports_it_unserved(
    redis_url: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rivers import defaults
    from tests.pipelines import submit_pipeline

    monkeypatch.setattr(defaults, "UNSERVED_TIMEOUT_S", 0.5)
    handle = submit_pipeline.shop.submit()
    assert client.hget(keys.run_key(handle.run_id), keys.RUN_REPOSITORY).decode() == SHOP
    result = handle.wait(timeout=20)
    assert not result.success and handle.status == "failed"
    assert result.failed_assets == [("<run>", f"no rivers-coordinator serves {SHOP}; start one with "
                                              f"rivers-coordinator --repo {SHOP}")]


def test_submit_wait_on_a_terminal_shows_the_live_display(
    redis_url: str, tmp_path: Path, workers: WorkerProcesses,
) -> None:
    import pty
    import select
    import time

    gate = tmp_path / "gate"
    gate.touch()
    env = {"SUBMIT_TEST_GATE": str(gate), "SUBMIT_TEST_STORE": str(tmp_path / "store")}
    workers.start(redis_url, concurrency=1, env=env)
    warehouse = coordinators(redis_url, tmp_path, WAREHOUSE, env)
    try:
        warehouse.name_of(warehouse.start())
        pid, fd = pty.fork()
        if pid == 0:  # the child: rivers on a terminal
            os.environ.update({"RIVERS_REDIS_URL": redis_url, "COLUMNS": "120"})
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "rivers.cli.main", "submit", WAREHOUSE, "--wait"])
        output, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", output.decode(errors="replace"))
            if gate.exists() and re.search(r"0 done +[1-3] running +[0-2] queued", text):
                gate.unlink()  # the display counted the claimed steps as running: let them end
        _, status = os.waitpid(pid, 0)
    finally:
        if gate.exists():
            gate.unlink()
        warehouse.close()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert re.search(r"0 done +[1-3] running +[0-2] queued", text), text
    assert statuses(text) == dict.fromkeys(["slow", "also_slow", "slowest", "after_slow"], "succeeded")
    assert re.search(r"run [0-9a-f-]{36} succeeded: success=True", text)
