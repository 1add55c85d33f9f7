"""A pipeline whose annotations are all strings (`from __future__ import annotations`, API.md §9.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

import rivers as rs

SEEN: dict[str, Any] = {}


class FutureConfig(BaseModel):
    factor: int = 2


@rs.Asset
def base(ctx: rs.AssetExecutionContext) -> int:
    SEEN["base"] = ctx
    return 3


@rs.Asset
def scaled(context: rs.AssetExecutionContext[FutureConfig], base: int) -> int:
    SEEN["scaled"] = context
    return base * context.config.factor


@rs.Asset
def tally(self: rs.SelfDependency[int], scaled: int) -> int:
    previous = self.get_inner()
    SEEN.setdefault("tally", []).append(previous)
    return (previous or 0) + scaled


@rs.Asset
def liar(base: int) -> int:
    return "not an int"  # type: ignore[return-value]


@rs.Task
def report(ctx: rs.TaskExecutionContext, tally: int) -> str:
    SEEN["report"] = ctx
    return f"tally={tally}"


@rs.Asset
def misplaced(base: int, ctx: rs.AssetExecutionContext) -> int:
    return base


def make_repo() -> rs.CodeRepository:
    return rs.CodeRepository(
        [base, scaled, tally, liar], tasks=[report], default_executor=rs.Executor.in_process()
    )


if TYPE_CHECKING:  # never imported at run time: get_type_hints cannot resolve it
    from decimal import Decimal


@rs.Asset
def partly_unresolvable(context: rs.AssetExecutionContext[FutureConfig], base: Decimal) -> int:
    SEEN["partly_unresolvable"] = context
    return "wrong"  # type: ignore[return-value]
