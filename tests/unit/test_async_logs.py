"""Async steps under the in-process executor, and rivers' structlog step events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import rivers as rs
import rivers.logs
from tests.unit.conftest import make_repo


# -- async ------------------------------------------------------------------------------------
def test_async_assets_and_tasks_in_process() -> None:
    seen: list[Any] = []

    @rs.Asset
    def sync_up() -> int:
        return 2

    @rs.Asset
    async def async_mid(context: rs.AssetExecutionContext, sync_up: int) -> int:
        await asyncio.sleep(0)
        seen.append(context.asset_name)
        return sync_up * 3

    @rs.Asset
    async def async_self(self: rs.SelfDependency[int], async_mid: int) -> int:
        return (self.get_inner() or 0) + async_mid

    @rs.Task
    async def async_task(async_mid: int) -> str:
        return f"got {async_mid}"

    @rs.Asset
    def sync_down(async_self: int) -> int:
        return async_self + 1

    repo = make_repo([sync_up, async_mid, async_self, sync_down], tasks=[async_task])
    assert async_mid.is_async and async_task.is_async and not sync_up.is_async
    result = repo.materialize()
    assert result.success and seen == ["async_mid"]
    assert repo.load_node("async_self") == 6
    assert repo.load_node("sync_down") == 7
    assert repo.load_node("async_task") == "got 6"
    repo.materialize()
    assert repo.load_node("async_self") == 12


def test_async_failure_is_reraised_and_skips_downstream() -> None:
    class AsyncBoomError(Exception):
        pass

    @rs.Asset
    async def async_bad() -> int:
        raise AsyncBoomError("async broke")

    @rs.Asset
    async def async_after(async_bad: int) -> int:
        return async_bad

    @rs.Asset
    async def async_independent() -> int:
        return 1

    repo = make_repo([async_bad, async_after, async_independent])
    with pytest.raises(AsyncBoomError):
        repo.materialize()
    assert repo.load_node("async_independent") == 1
    result = repo.materialize(raise_on_error=False)
    assert dict(result.failed_assets) == {
        "async_bad": "AsyncBoomError: async broke",
        "async_after": "ExecutionError: Skipped: upstream dependency failed",
    }


def test_async_return_type_is_checked() -> None:
    @rs.Asset
    async def async_typed() -> int:
        return "no"  # type: ignore[return-value]

    with pytest.raises(rs.AssetOutputValidationError, match="async_typed"):
        make_repo([async_typed]).materialize()


# -- structlog events -------------------------------------------------------------------------
@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RIVERS_LOG_FORMAT", "json")
    monkeypatch.delenv("RIVERS_LOG_LEVEL", raising=False)
    rivers.logs.reset()
    yield
    rivers.logs.reset()


def events_from(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if str(record.get("event", "")).startswith("step."):
                events.append(record)
    return events


def test_step_events_are_json_with_run_id_step_executor_duration(json_logs: Any, capfd: Any) -> None:
    @rs.Asset
    def ok() -> int:
        return 1

    @rs.Asset
    def bad(ok: int) -> int:
        raise ValueError("nope")

    @rs.Asset
    def skipped(bad: int) -> int:
        return bad

    capfd.readouterr()
    result = make_repo([ok, bad, skipped]).materialize(raise_on_error=False)
    events = events_from(capfd.readouterr().err)
    by_kind = {(e["event"], e["step_key"]): e for e in events}
    assert set(by_kind) >= {
        ("step.started", "ok"), ("step.succeeded", "ok"),
        ("step.started", "bad"), ("step.failed", "bad"), ("step.skipped", "skipped"),
    }
    assert ("step.started", "skipped") not in by_kind
    for event in events:
        assert event["run_id"] == result.run_id
        assert event["executor"] == "in_process"
    for key in (("step.succeeded", "ok"), ("step.failed", "bad")):
        assert isinstance(by_kind[key]["duration_s"], float) and by_kind[key]["duration_s"] >= 0
        assert by_kind[key]["attempt"] == 1
    assert "ValueError: nope" in by_kind[("step.failed", "bad")]["error"]
    order = [(e["event"], e["step_key"]) for e in events]
    assert order.index(("step.started", "ok")) < order.index(("step.succeeded", "ok")) < order.index(
        ("step.started", "bad"))


def test_log_level_filters_info_events(monkeypatch: pytest.MonkeyPatch, capfd: Any) -> None:
    monkeypatch.setenv("RIVERS_LOG_FORMAT", "json")
    monkeypatch.setenv("RIVERS_LOG_LEVEL", "ERROR")
    rivers.logs.reset()
    try:
        @rs.Asset
        def quiet() -> int:
            return 1

        @rs.Asset
        def loud() -> int:
            raise ValueError("x")

        capfd.readouterr()
        make_repo([quiet, loud]).materialize(raise_on_error=False)
        kinds = {(e["event"], e["step_key"]) for e in events_from(capfd.readouterr().err)}
        assert kinds == {("step.failed", "loud")}
    finally:
        rivers.logs.reset()


def test_retry_events(json_logs: Any, capfd: Any) -> None:
    attempts: list[int] = []

    @rs.Asset(retry=rs.RetryPolicy(1))
    def once_flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("first")
        return 1

    capfd.readouterr()
    make_repo([once_flaky]).materialize()
    events = [(e["event"], e.get("attempt")) for e in events_from(capfd.readouterr().err)]
    assert events == [("step.started", 1), ("step.retrying", 1), ("step.started", 2), ("step.succeeded", 2)]
