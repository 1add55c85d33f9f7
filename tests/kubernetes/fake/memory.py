"""Memory limits that really kill: a memory cgroup per container where the machine allows it, else an RSS watchdog."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil


class CgroupMemory:
    """Real memory limits: each limited container runs in its own child cgroup of a private parent, created under
    this process's memory cgroup (v1) or beside it in a delegated subtree (v2), so the kernel OOM-kills it."""

    mode = "cgroup"

    def __init__(self, root: Path, version: int) -> None:
        self.root, self.version = root, version

    @classmethod
    def create(cls) -> CgroupMemory:
        """Raises OSError or RuntimeError saying why this machine cannot do it."""
        base, version = _memory_cgroup_base()
        root = base / f"rivers-fake-k8s-{os.getpid()}"
        root.mkdir()
        try:
            if version == 2:
                if "memory" not in (root / "cgroup.controllers").read_text().split():
                    raise RuntimeError(f"the memory controller is not delegated to {base}")
                (root / "cgroup.subtree_control").write_text("+memory")
            memory = cls(root, version)
            memory.limit("probe", 64 << 20).close()
            return memory
        except BaseException:
            root.rmdir()
            raise

    def limit(self, name: str, limit_bytes: int) -> CgroupLimit:
        return CgroupLimit(self.root / name, self.version, limit_bytes)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.root.rmdir()


def _memory_cgroup_base() -> tuple[Path, int]:
    own = Path("/proc/self/cgroup").read_text().splitlines()
    mounts = [line.split(" - ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for left, right in mounts:
        fstype, _, options = right.split()[:3]
        if fstype == "cgroup" and "memory" in options.split(","):
            path = next(line.split(":", 2)[2] for line in own if "memory" in line.split(":")[1].split(","))
            return Path(left.split()[4]) / os.path.relpath(path, left.split()[3]), 1
    for left, right in mounts:
        if right.split()[0] == "cgroup2":
            path = next(line[3:] for line in own if line.startswith("0::"))
            rel = os.path.relpath(path, left.split()[3])
            base = Path(left.split()[4]) / rel
            # a cgroup with processes cannot hand controllers to children (v2): use its parent
            return (base if rel == "." else base.parent), 2
    raise RuntimeError("no cgroup memory controller is mounted")


class CgroupLimit:
    def __init__(self, path: Path, version: int, limit_bytes: int) -> None:
        self.path, self.version = path, version
        path.mkdir()
        files = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes") if version == 1 \
            else ("memory.max", "memory.swap.max")
        (path / files[0]).write_text(str(limit_bytes))
        with contextlib.suppress(OSError):  # no swap escape; absent without swap accounting
            (path / files[1]).write_text(str(limit_bytes) if version == 1 else "0")

    def wrap(self, argv: list[str]) -> list[str]:
        """The process joins the cgroup before it execs the command (no window to allocate outside it)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        pass

    def oom_killed(self) -> bool:
        text = (self.path / ("memory.oom_control" if self.version == 1 else "memory.events")).read_text()
        return any(line.split()[:1] == ["oom_kill"] and int(line.split()[1]) > 0 for line in text.splitlines())

    def close(self) -> None:
        for _ in range(200):
            with contextlib.suppress(OSError, ValueError):
                for pid in (self.path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                self.path.rmdir()
                return
            time.sleep(0.01)


class RssWatchdog:
    """The fallback: sample the container's process tree every `interval` and SIGKILL it over its limit."""

    mode = "watchdog"

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval

    def limit(self, name: str, limit_bytes: int) -> WatchdogLimit:
        return WatchdogLimit(limit_bytes, self.interval)

    def close(self) -> None:
        pass


class WatchdogLimit:
    def __init__(self, limit_bytes: int, interval: float) -> None:
        self.limit_bytes, self.interval, self.killed = limit_bytes, interval, False

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        threading.Thread(target=self._watch, args=(proc,), daemon=True, name="rss-watchdog").start()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while proc.returncode is None:
            rss = 0
            with contextlib.suppress(psutil.Error):
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            if rss > self.limit_bytes and proc.returncode is None:
                self.killed = True
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(self.interval)

    def oom_killed(self) -> bool:
        return self.killed

    def close(self) -> None:
        pass


MemoryLimiter = CgroupMemory | RssWatchdog
