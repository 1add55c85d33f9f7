"""Fixtures shared by the distributed tests: a real redis-server and real rivers-worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.redis_server import RedisServer, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_rivers_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without the caller's RIVERS_* settings (log level, Redis URL, secret)."""
    from rivers import logs

    for name in [n for n in os.environ if n.startswith("RIVERS_")]:
        monkeypatch.delenv(name)
    logs.reset()
    yield
    logs.reset()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (no persistence); tests that restart Redis start their own."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty Redis, and RIVERS_REDIS_URL pointing at it: runs of this test dispatch through Redis."""
    client = redis_server.client()
    client.flushdb()
    client.close()
    monkeypatch.setenv("RIVERS_REDIS_URL", redis_server.url)
    yield redis_server.url


class WorkerProcesses:
    """Starts `rivers-worker` subprocesses; at teardown kills them and checks that no child outlived them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: set[int] = set()

    def start(self, url: str, *, concurrency: int = 2, count: int = 1, extra: list[str] | None = None,
              env: dict[str, str] | None = None, wait: bool = True) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            log = (self.log_dir / f"worker-{len(self.processes)}.log").open("wb")
            environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
            environ.update({"RIVERS_LOG_FORMAT": "json", "RIVERS_LOG_LEVEL": "INFO", **(env or {})})
            process = subprocess.Popen(
                [sys.executable, "-m", "rivers.cli.worker", "--executor", "parallel", "--concurrency",
                 str(concurrency), "--redis-url", url, *(extra or [])],
                cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
            )
            self.processes.append(process)
            started.append(process)
        if wait:
            import redis

            client = redis.Redis.from_url(url)
            expected = len([p for p in self.processes if p.poll() is None])
            wait_for(lambda: _live_workers(client) >= expected, 30, message=f"{expected} workers to register")
            client.close()
        return started

    def tree(self, process: subprocess.Popen[bytes]) -> list[psutil.Process]:
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.children.update(child.pid for child in children)
        return children

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and every process it started (a machine dying takes them all)."""
        children = self.tree(process)
        process.send_signal(signal.SIGKILL)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait(10)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("worker-*.log")))

    def close(self) -> None:
        for process in self.processes:
            self.tree(process)
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(process)
        try:  # a pool process notices its parent's exit within moments
            wait_for(lambda: not [pid for pid in self.children if _alive(pid)], 15, message="worker children to exit")
        except AssertionError:
            pass
        leaked = [pid for pid in self.children if _alive(pid)]
        for pid in leaked:
            psutil.Process(pid).kill()
        assert not leaked, f"worker children outlived their worker: {leaked}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _live_workers(client: object) -> int:
    from rivers.queues.redis import live_workers

    return len(live_workers(client, "parallel"))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    procs = WorkerProcesses(log_dir)
    yield procs
    procs.close()


WorkerFactory = Callable[..., list[subprocess.Popen[bytes]]]
