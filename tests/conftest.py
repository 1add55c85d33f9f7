"""Fixtures shared by the distributed tests: a real redis-server, real rivers-worker and rivers-coordinator
processes, and a run in a thread."""

from __future__ import annotations

import compileall
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.redis_server import RedisServer, unblock_clients, wait_for

if TYPE_CHECKING:
    import rivers as rs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def compiled_bytecode() -> None:
    """Byte-compile rivers, the tests and the examples once, before the first test: the suite starts hundreds of
    Python processes (workers, coordinators, step pods, CLI commands), and with PYTHONDONTWRITEBYTECODE set
    (as on CI) none of them would write the .pyc files it compiled, so each would compile every module anew."""
    for directory in ("rivers", "tests", "examples"):
        if (ROOT / directory).is_dir():
            compileall.compile_dir(ROOT / directory, quiet=1)


@pytest.fixture(autouse=True)
def clean_rivers_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without the caller's RIVERS_* settings (log level, Redis URL, secret)."""
    from rivers import logs

    for name in [n for n in os.environ if n.startswith("RIVERS_")]:
        monkeypatch.delenv(name)
    logs.reset()
    yield
    logs.reset()


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's coordinator checks its steps' leases, jobs and reports every 0.2 s instead of every
    WATCH_INTERVAL_S (1 s): a test that waits for a lease to lapse, or a lost job to be sent again, learns of
    it sooner. Workers and rivers-coordinator subprocesses keep their own defaults."""
    from rivers import defaults

    monkeypatch.setattr(defaults, "WATCH_INTERVAL_S", 0.2)


SHORT_LEASE_MS = 3000  # the shortest lease rivers accepts (defaults.LEASE_MIN_MS)


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> int:
    """Leases of SHORT_LEASE_MS instead of LEASE_MS (5 s), as RIVERS_LEASE_MS sets them, in this process (its
    coordinator) and in every worker, coordinator, launcher and step pod the test starts: a test that waits for
    a lease to lapse waits less. Returns the lease in ms."""
    from rivers import defaults

    monkeypatch.setenv(defaults.LEASE_ENV, str(SHORT_LEASE_MS))  # passed on by child_environment
    monkeypatch.setattr(defaults, "LEASE_MS", defaults.lease_ms(str(SHORT_LEASE_MS)))
    monkeypatch.setattr(defaults, "LAUNCHER_TTL_MS", defaults.launcher_ttl_ms(SHORT_LEASE_MS))
    return SHORT_LEASE_MS


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this one's without its RIVERS_* settings, except the lease
    (short_lease: every process of a test has the same), logging JSON at INFO, then `extra`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_") or k == "RIVERS_LEASE_MS"}
    environ.update({"RIVERS_LOG_FORMAT": "json", "RIVERS_LOG_LEVEL": "INFO", **extra})
    return environ


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


def _own_redis(monkeypatch: pytest.MonkeyPatch, *, appendonly: bool) -> Iterator[RedisServer]:
    with RedisServer(appendonly=appendonly) as server:
        monkeypatch.setenv("RIVERS_REDIS_URL", server.url)
        yield server


@pytest.fixture
def persistent_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of the test's own that keeps its data across a restart (append-only file)."""
    yield from _own_redis(monkeypatch, appendonly=True)


@pytest.fixture
def forgetful_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of the test's own that keeps nothing across a restart."""
    yield from _own_redis(monkeypatch, appendonly=False)


class WorkerProcesses:
    """Starts `rivers-worker` subprocesses; at teardown kills them and checks that no child outlived them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: set[int] = set()
        self.urls: dict[int, str] = {}  # pid -> the Redis a worker consumes

    def start(self, url: str, *, concurrency: int = 2, count: int = 1, extra: list[str] | None = None,
              env: dict[str, str] | None = None, wait: bool = True) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            log = (self.log_dir / f"worker-{len(self.processes)}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "rivers.cli.worker", "--executor", "parallel", "--concurrency",
                 str(concurrency), "--redis-url", url, *(extra or [])],
                cwd=ROOT, env=child_environment(**(env or {})), stdout=log, stderr=subprocess.STDOUT,
            )
            self.processes.append(process)
            self.urls[process.pid] = url
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

    def owner_of(self, pid: int) -> subprocess.Popen[bytes]:
        """The worker whose process tree holds `pid`."""
        for process in self.processes:
            if process.pid == pid or pid in {child.pid for child in self.tree(process)}:
                return process
        raise AssertionError(f"pid {pid} belongs to no worker")

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

    def stop(self, processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
        """SIGTERM these workers (they finish their steps) and wait until they exited."""
        for process in processes:
            self.tree(process)
            process.terminate()
        wake_stopping(processes, self.urls)
        for process in processes:
            process.wait(timeout)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("worker-*.log")))

    def close(self) -> None:
        for process in self.processes:
            self.tree(process)
            if process.poll() is None:
                process.terminate()
        wake_stopping(self.processes, self.urls)
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


def wake_stopping(processes: list[subprocess.Popen[bytes]], urls: dict[int, str], timeout: float = 5.0) -> None:
    """After a stop signal: keep unblocking the blocking Redis reads of the daemons still running (each returns
    as if its timeout had passed), so that they see the signal at once rather than after their current wait
    for a job. Returns when they all exited, or after `timeout` (the caller then waits as usual)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [p for p in processes if p.poll() is None]
        if not running:
            return
        for url in {urls[p.pid] for p in running if p.pid in urls}:
            unblock_clients(url)
        try:
            running[0].wait(0.05)
        except subprocess.TimeoutExpired:
            pass


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


class CoordinatorProcesses:
    """Starts `rivers-coordinator` subprocesses serving `repo_ref`, each logging JSON to
    `directory`/coordinator-<i>.log, with `env` added to child_environment()."""

    def __init__(self, url: str, directory: Path, repo_ref: str, env: dict[str, str] | None = None) -> None:
        self.url, self.directory, self.repo_ref = url, directory, repo_ref
        self.env = dict(env or {})
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log_path(len(self.processes)).open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "rivers.cli.coordinator", "--repo", self.repo_ref,
                                        "--redis-url", self.url], cwd=ROOT, env=child_environment(**self.env),
                                       stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def log_path(self, index: int) -> Path:
        return self.directory / f"coordinator-{index}.log"

    def name_of(self, process: subprocess.Popen[bytes]) -> str:
        """The coordinator's name (what it writes as the run's owner), from its `coordinator.started` log line."""
        path = self.log_path(self.processes.index(process))

        def started() -> str | None:
            assert process.poll() is None, f"coordinator exited: {path.read_text(errors='replace')[-2000:]}"
            for line in path.read_text(errors="replace").splitlines():
                if '"coordinator.started"' in line:
                    return str(json.loads(line)["coordinator"])
            return None

        return str(wait_for(started, 30, message=f"{path.name} to log coordinator.started"))

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a test that failed may leave one stopped (SIGSTOP)
                process.send_signal(signal.SIGKILL)
            process.wait(10)


class Background:
    """An embedded-coordinator run (repo.materialize) in a thread, so that the test can break things meanwhile."""

    def __init__(self, repo: rs.CodeRepository, **kwargs: Any) -> None:
        self.result: rs.RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(repo, kwargs), daemon=True)
        self.thread.start()

    def _run(self, repo: rs.CodeRepository, kwargs: dict[str, Any]) -> None:
        try:
            self.result = repo.materialize(raise_on_error=False, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def wait(self, timeout: float = 90) -> rs.RunResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the run did not finish within {timeout:g} s"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
