"""An embedded run recorded in Redis (materialize with RIVERS_REDIS_URL set) whose process dies does not stay
`running` for ever: its alive key lapses and whoever lists it next fails it, naming the process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from rivers.distributed.history import list_runs, run_detail
from rivers.queues import keys
from tests.redis_server import wait_for

ROOT = Path(__file__).resolve().parents[2]
ALIVE_MS = 1500

CHILD = """
import os, sys, time
import rivers as rs
from rivers import defaults

defaults.EMBEDDED_ALIVE_MS = {alive_ms}  # lapses soon after a kill (the test need not wait 10 s)
started, gate = sys.argv[1], sys.argv[2]


@rs.Asset
def first() -> int:
    return 1


@rs.Asset
def held(first: int) -> int:
    open(started, "w").close()
    while os.path.exists(gate):
        time.sleep(0.02)
    return first + 1


repo = rs.CodeRepository(assets=[first, held], default_executor=rs.Executor.in_process(),
                         default_io_handler=rs.InMemoryIOHandler())
print(repo.materialize().success, flush=True)
"""


@pytest.fixture
def child(tmp_path: Path, redis_url: str) -> Any:
    script = tmp_path / "embedded_child.py"
    script.write_text(CHILD.format(alive_ms=ALIVE_MS))
    started, gate = tmp_path / "started", tmp_path / "gate"
    gate.touch()
    env = {**os.environ, "RIVERS_REDIS_URL": redis_url, "RIVERS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(script), str(started), str(gate)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: started.exists() or process.poll() is not None, 60, message="the held step to start")
    assert process.poll() is None, process.communicate()
    yield process, gate
    if process.poll() is None:
        process.kill()
    process.communicate()


def only_run(client: Any) -> dict[str, Any]:
    [run] = list_runs(client)
    return run


def test_a_killed_embedded_run_ends_failed_naming_its_process(child: Any, redis_url: str) -> None:
    process, _gate = child
    client = redis.Redis.from_url(redis_url)
    run = only_run(client)
    assert (run["kind"], run["status"]) == ("embedded", "running")
    alive = keys.run_alive_key(run["run_id"])
    first_ttl = client.pttl(alive)
    assert 0 < first_ttl <= ALIVE_MS
    wait_for(lambda: client.pttl(alive) > first_ttl, 10, message="the alive key to be renewed")  # the process beats
    assert only_run(client)["status"] == "running"  # listing a live run leaves it running

    process.send_signal(signal.SIGKILL)
    process.wait()
    wait_for(lambda: only_run(client)["status"] == "failed", 10, message="the lost run to be failed")
    run = only_run(client)
    assert run["error"] == f"the process that ran it (embedded (pid {process.pid} on {os.uname().nodename})) " \
                           "stopped before the run ended"
    assert run["ended_at"] is not None and run["duration_s"] is not None
    detail = run_detail(client, run["run_id"])
    assert detail is not None and detail["status"] == "failed"
    steps = {step["step"]: step["status"] for step in detail["step_runs"]}
    assert steps == {"first": "succeeded", "held": "running"}  # what it had done when it died, as it was
    for key in (keys.run_key(run["run_id"]), keys.run_events_key(run["run_id"]), keys.run_steps_key(run["run_id"])):
        assert client.pttl(key) > 0, f"{key} never expires"  # bounded even though the run never ended itself


def test_an_embedded_run_that_ends_takes_its_alive_key_with_it(child: Any, redis_url: str) -> None:
    process, gate = child
    client = redis.Redis.from_url(redis_url)
    run_id = only_run(client)["run_id"]
    gate.unlink()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out.decode().strip() == "True", err.decode()
    assert not client.exists(keys.run_alive_key(run_id))
    assert only_run(client)["status"] == "succeeded"  # no alive key, but it ended: never mistaken for lost
    assert json.loads(client.hget(keys.run_key(run_id), "counts"))["succeeded"] == 2


def test_an_embedded_run_paused_past_its_alive_key_records_how_it_really_ended(child: Any, redis_url: str) -> None:
    """Paused (SIGSTOP) past its alive key, the run is listed as failed meanwhile; its process comes back and
    finishes the run: the record then says how it ended (and that it was taken for lost), and the process warns."""
    process, gate = child
    client = redis.Redis.from_url(redis_url)
    run_id = only_run(client)["run_id"]
    process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: only_run(client)["status"] == "failed", 10, message="the paused run to be taken for lost")
    finally:
        process.send_signal(signal.SIGCONT)
    gate.unlink()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out.decode().strip() == "True", err.decode()
    run = only_run(client)
    assert (run["status"], run["error"]) == ("succeeded", None)
    assert client.hget(keys.run_key(run_id), keys.RUN_LOST_AT) is not None
    assert not client.hexists(keys.run_key(run_id), "error")
    assert json.loads(client.hget(keys.run_key(run_id), "counts"))["succeeded"] == 2
    assert "run.declared_lost_meanwhile" in err.decode()
