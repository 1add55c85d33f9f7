"""Pipelines for tests/unit/test_contract_audit.py that run in pool processes (module-level on purpose)."""

from __future__ import annotations

import os

import rivers as rs


@rs.Asset(retry=rs.RetryPolicy(2, retry_on=[ValueError]))
def dies_under_a_narrow_policy() -> int:
    os._exit(3)  # the worker process dies: an infrastructure failure


@rs.Asset(retry=rs.RetryPolicy(1, retry_on=rs.RetryOn.TRANSIENT))
def dies_under_a_transient_policy() -> int:
    os._exit(3)


@rs.Asset
def context_kind(context) -> str:  # type: ignore[no-untyped-def]
    return type(context).__name__


@rs.Task
def describe_context(context) -> str:  # type: ignore[no-untyped-def]
    return f"{type(context).__name__}:{context.task_name}"


@rs.Asset.from_graph()
def graph_context():  # type: ignore[no-untyped-def]
    return describe_context()


@rs.Asset
def where_free() -> int:
    return os.getpid()


@rs.Asset(metadata={"rivers/executor": "parallel"})
def where_pinned_parallel() -> int:
    return os.getpid()
