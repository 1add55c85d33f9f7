"""Definitions for tests/unit/test_spec.py (string annotations on purpose: hints are recomputed)."""

from __future__ import annotations

from pydantic import BaseModel, SecretStr

import rivers as rs


class SpecConfig(BaseModel):
    factor: int = 1


class Offset(rs.Resource):
    value: int = 0
    token: SecretStr = SecretStr("")


@rs.Asset
def base() -> int:
    return 5


@rs.Asset(metadata={"owner": "me"})
def scaled(context: rs.AssetExecutionContext[SpecConfig], base: int, offset: Offset,
           self: rs.SelfDependency[int]) -> int:
    context.add_output_metadata({"factor": context.config.factor})
    context.log.info("scaling %s", base)
    previous = self.get_inner() or 0
    return base * context.config.factor + offset.value + previous + len(offset.token.get_secret_value())


@rs.Task
def a_task(context: rs.TaskExecutionContext, base: int) -> str:
    return f"{type(context).__name__}:{base}"
