"""Redis going away while an embedded run (materialize with RIVERS_REDIS_URL set) records itself: the run goes on
and ends as it would have, the process says its record failed, and once Redis is back the record catches up: every
step's events (none twice) and how the run ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rivers.distributed.history import list_runs, run_detail
from rivers.queues import keys
from tests.redis_server import RedisServer, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys, time
import rivers as rs

directory = sys.argv[1]


def hold(name: str) -> None:
    open(os.path.join(directory, name + ".started"), "w").close()
    while not os.path.exists(os.path.join(directory, name + ".open")):
        time.sleep(0.02)


@rs.Asset
def first() -> int:
    return 1


@rs.Asset
def held(first: int) -> int:
    hold("held")
    return first + 1


@rs.Asset
def last(held: int) -> int:
    hold("last")
    return held + 1


repo = rs.CodeRepository(assets=[first, held, last], default_executor=rs.Executor.in_process(),
                         default_io_handler=rs.InMemoryIOHandler())
result = repo.materialize(raise_on_error=False)
print(result.success, repo.load_node("last"), flush=True)
"""


class Child:
    def __init__(self, directory: Path, url: str) -> None:
        self.dir = directory
        self.stderr = directory / "stderr.log"
        script = directory / "child.py"
        script.write_text(CHILD)
        env = {**os.environ, "RIVERS_REDIS_URL": url, "RIVERS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
               "RIVERS_REDIS_RETRIES": "1"}  # a command gives up on a stopped Redis at once
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, str(script), str(directory)], cwd=directory, env=env,
                                            stdout=subprocess.PIPE, stderr=err)

    def reach(self, name: str) -> None:
        wait_for(lambda: (self.dir / f"{name}.started").exists() or self.process.poll() is not None, 60,
                 message=f"step {name} to start")
        assert self.process.poll() is None, self.logs()

    def release(self, name: str) -> None:
        (self.dir / f"{name}.open").touch()

    def logs(self) -> str:
        return self.stderr.read_text()

    def finish(self) -> str:
        out, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, self.logs()
        return out.decode().strip()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as own:
        yield own


@pytest.fixture
def child(server: RedisServer, tmp_path: Path) -> Iterator[Child]:
    started = Child(tmp_path, server.url)
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.communicate()


def test_redis_gone_mid_run_and_back_before_its_end_leaves_a_record_of_how_it_ended(
    server: RedisServer, child: Child
) -> None:
    child.reach("held")
    client = redis.Redis.from_url(server.url)
    [run] = list_runs(client)
    assert run["status"] == "running"
    server.stop()
    child.release("held")  # its end is recorded while Redis is away: that write fails and is kept
    child.reach("last")
    wait_for(lambda: "run.record_failed" in child.logs(), 30, message="the process to say its record failed")
    server.start()
    child.release("last")
    assert child.finish() == "True 3"  # the run was never failed by its record
    [run] = list_runs(client)
    assert (run["status"], run["error"]) == ("succeeded", None)
    record = client.hgetall(keys.run_key(run["run_id"]))
    assert json.loads(record[b"counts"])["succeeded"] == 3  # counted in the process, not from what reached Redis
    assert not client.exists(keys.run_alive_key(run["run_id"]))
    assert client.pttl(keys.run_key(run["run_id"])) > 0
    detail = run_detail(client, run["run_id"])
    assert detail is not None
    assert [(row["step"], row["status"], row["attempts"]) for row in detail["step_runs"]] == [
        ("first", "succeeded", 1), ("held", "succeeded", 1), ("last", "succeeded", 1)]  # caught up, none twice
    assert child.logs().count("run.record_failed") == 1 and "run.record_resumed" in child.logs()


def test_redis_gone_until_after_the_run_ends_costs_the_run_nothing(server: RedisServer, child: Child) -> None:
    child.reach("held")
    server.stop()
    child.release("held")
    child.reach("last")
    child.release("last")
    assert child.finish() == "True 3"
    assert child.logs().count("run.record_failed") == 2  # the writes, then the last try at the end; no traceback
    assert "Traceback" not in child.logs()
