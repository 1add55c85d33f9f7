"""A real redis-server for the tests, on a free port (never 6379), in a directory of its own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Start, stop and restart one redis-server process; `url` stays the same across restarts."""

    def __init__(self, *, appendonly: bool = False, password: str | None = None, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (scripts/test installs it)")
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.dir = tempfile.mkdtemp(prefix="rivers-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", self.dir]
        if self.appendonly:
            args += ["--appendfsync", "always"]  # a restart in the fault tests must lose nothing
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: an appendonly server writes its file first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def unblock_clients(url: str) -> int:
    """CLIENT UNBLOCK every client of the Redis at `url` that waits in a blocking command (BLMOVE, BLMPOP, BLPOP):
    the command returns as if its timeout had passed. A stopping daemon then sees its stop signal at once instead
    of at the end of its current wait. Returns how many were unblocked; 0 when Redis does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        blocked = [c["id"] for c in client.client_list() if "b" in c.get("flags", "")]
        return sum(int(client.client_unblock(client_id)) for client_id in blocked)
    except redis.RedisError:
        return 0
    finally:
        client.close()


def wait_for(predicate, timeout: float, interval: float = 0.02, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


__all__ = ["RedisServer", "free_port", "unblock_clients", "wait_for"]
