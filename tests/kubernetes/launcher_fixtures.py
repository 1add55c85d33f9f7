"""A pod launcher subprocess (`rivers-worker --executor kubernetes`) against the fake cluster and a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from rivers.queues import keys
from tests.conftest import ROOT, child_environment, wake_stopping
from tests.kubernetes.fake_cluster import FakeCluster
from tests.redis_server import wait_for


class Launchers:
    """Starts launchers; at teardown stops them and says what they logged if a test failed."""

    def __init__(self, cluster: FakeCluster, url: str, log_dir: Path) -> None:
        self.cluster = cluster
        self.url = url
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        cluster.add_secret("default", "rivers-redis", {"url": url})

    def start(self, *extra: str, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"launcher-{len(self.processes)}.log").open("wb")
        environ = child_environment(**{"RIVERS_WORKER_IMAGE": "rivers-worker:test", **(env or {})})
        process = subprocess.Popen(
            [sys.executable, "-m", "rivers.cli.worker", "--executor", "kubernetes", "--redis-url", self.url,
             "--kubeconfig", os.fspath(self.cluster.kubeconfig), *extra],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        if wait:
            client = redis.Redis.from_url(self.url)
            wait_for(lambda: any(client.exists(keys.worker_key(name.decode()))
                                 for name in client.smembers(keys.workers_key("kubernetes"))) or
                     process.poll() is not None, 30, message="the launcher to register")
            client.close()
            assert process.poll() is None, f"the launcher exited at once:\n{self.logs()}"
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("launcher-*.log")))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGTERM)  # twice: leave at once, whatever it follows
        wake_stopping(self.processes, {process.pid: self.url for process in self.processes})
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(process)


@contextmanager
def launchers_on(cluster: FakeCluster, url: str, tmp_path: Path) -> Iterator[Launchers]:
    """Launchers against the Redis at `url` (the session's, or one a test stops and starts), stopped at the end."""
    log_dir = tmp_path / "launcher-logs"
    log_dir.mkdir()
    started = Launchers(cluster, url, log_dir)
    try:
        yield started
    finally:
        started.close()
