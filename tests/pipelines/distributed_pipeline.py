"""Pipelines for the distributed tests: module-level, so rivers-worker processes import them by reference.

Steps learn where to record things (execution counters, pids) through the `scratch` resource, which
travels to the worker as JSON.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from obstore.store import LocalStore

import rivers as rs


class Scratch(rs.Resource):
    """A directory shared by the test and the steps."""

    dir: str

    def count(self, name: str) -> int:
        """Append this pid to `name` and return how many lines it has: a cross-process execution counter."""
        path = Path(self.dir) / name
        with path.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        return len(path.read_text().splitlines())

    def lines(self, name: str) -> list[str]:
        path = Path(self.dir) / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_for(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (Path(self.dir) / name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"'{name}' never appeared")
            time.sleep(0.02)


@rs.Asset
def source(scratch: Scratch) -> int:
    scratch.count("source")
    return 21


@rs.Asset
def doubled(source: int, scratch: Scratch) -> int:
    scratch.count("doubled")
    return source * 2


@rs.Asset
async def async_plus_one(doubled: int, scratch: Scratch) -> int:
    scratch.count("async_plus_one")
    await asyncio.sleep(0)
    return doubled + 1


@rs.Asset
def pid() -> int:
    return os.getpid()


@rs.Asset
def broken(source: int) -> int:
    raise ValueError(f"boom from a worker ({source})")


@rs.Asset
def after_broken(broken: int) -> int:
    return broken


@rs.Asset
def independent(scratch: Scratch) -> str:
    scratch.count("independent")
    return "fine"


@rs.Asset
def stalls_once(source: int, scratch: Scratch) -> int:
    """The first execution announces itself and waits (its worker gets killed); later ones return."""
    if scratch.count("stalls_once") == 1:
        scratch.wait_for("never", timeout=120)
    return source + 1


@rs.Asset
def after_stall(stalls_once: int, scratch: Scratch) -> int:
    scratch.count("after_stall")
    return stalls_once


@rs.Asset
def gated(source: int, scratch: Scratch) -> int:
    """Runs until the test creates 'open' (the test restarts Redis meanwhile)."""
    scratch.count("gated")
    scratch.wait_for("open")
    return source


@rs.Asset
def after_gated(gated: int, scratch: Scratch) -> int:
    scratch.count("after_gated")
    return gated + 1


def handler_for(directory: str | Path) -> rs.PickleIOHandler:
    return rs.PickleIOHandler(LocalStore(str(directory)))


def make_repo(assets: list[Any], directory: str | Path, **kwargs: Any) -> rs.CodeRepository:
    scratch_dir = Path(directory) / "scratch"
    scratch_dir.mkdir(parents=True, exist_ok=True)
    store_dir = Path(directory) / "store"
    store_dir.mkdir(parents=True, exist_ok=True)
    return rs.CodeRepository(assets, default_io_handler=handler_for(store_dir),
                             resources={"scratch": Scratch(dir=str(scratch_dir))}, **kwargs)


# The repository rivers-coordinator serves in the tests: its directory comes from the environment.
served_repo = make_repo([source, doubled, gated, after_gated, broken, after_broken],
                        os.environ.get("DIST_TEST_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "rivers-dist")
