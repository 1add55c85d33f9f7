"""Shared helpers for the unit tests: every repository here runs in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import rivers as rs
from tests.redis_server import RedisServer


def make_repo(assets: list[Any], **kwargs: Any) -> rs.CodeRepository:
    """A repository whose runs stay in this process (the parallel executor is tested elsewhere)."""
    kwargs.setdefault("default_executor", rs.Executor.in_process())
    return rs.CodeRepository(assets, **kwargs)


@pytest.fixture
def repo_factory() -> Any:
    return make_repo


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A redis-server of this test module's own."""
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def client(server: RedisServer) -> Iterator[Any]:
    """A client of the module's Redis, emptied for each test."""
    conn = server.client()
    conn.flushdb()
    yield conn
    conn.close()
