"""Shared helpers for the unit tests: every repository here runs in-process."""

from __future__ import annotations

from typing import Any

import pytest

import rivers as rs


def make_repo(assets: list[Any], **kwargs: Any) -> rs.CodeRepository:
    """A repository whose runs stay in this process (the parallel executor is tested elsewhere)."""
    kwargs.setdefault("default_executor", rs.Executor.in_process())
    return rs.CodeRepository(assets, **kwargs)


@pytest.fixture
def repo_factory() -> Any:
    return make_repo
