"""Observing external assets: call each observe function, record what it reports (no value is written).

    ExternalAsset.observe_fn ──> (context, resources) ──> Observation | None
        ──> context metadata + observation metadata ──> StepResult in the RunResult

Observe functions run here, in the caller's process, one after another; they load no inputs.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from rivers.definitions.assets import ExternalAsset, Observation
from rivers.definitions.contexts import AssetExecutionContext
from rivers.definitions.metadata import coerce_metadata
from rivers.exceptions import ExecutionError
from rivers.resolve import config_type_of, context_class, type_hints_of
from rivers.results import OutputResult, RunResult, StepResult


def observe_assets(
    assets: list[ExternalAsset], resources: Mapping[str, BaseModel], *, raise_on_error: bool = True
) -> RunResult:
    """Run the observe functions of `assets`; with none, a successful no-op whose `run_id` is empty."""
    if not assets:
        return RunResult(success=True, run_id="")
    run_id = str(uuid.uuid4())
    results = {asset.name: observe_one(asset, resources, run_id) for asset in assets}
    failed = [(name, r.error.summary()) for name, r in results.items() if r.error is not None]
    if failed and raise_on_error:
        first = next(r.exception for r in results.values() if r.exception is not None)
        raise first
    return RunResult(
        success=not failed, run_id=run_id, materialized_assets=list(results), failed_assets=failed,
        step_results=results,
    )


def observe_one(asset: ExternalAsset, resources: Mapping[str, BaseModel], run_id: str) -> StepResult:
    """One observation as a StepResult: its metadata and data version, or the error of the observe function."""
    started, clock = time.time(), time.perf_counter()
    context: AssetExecutionContext[Any] = AssetExecutionContext(
        asset.name, tags=asset.tags, kinds=asset.kinds, group=asset.group, asset_metadata=asset.metadata or None,
        run_id=run_id,
    )
    try:
        returned = _call(asset, _arguments(asset, context, resources))
        output = _observed(asset.name, context, returned)
    except Exception as exc:  # noqa: BLE001 - reported in the StepResult
        return StepResult.failed(run_id, asset.name, 1, [asset.name], exc)
    return StepResult(
        run_id=run_id, step_key=asset.name, attempt=1, status="succeeded", outputs=[output],
        started_at=started, duration_s=time.perf_counter() - clock, pid=os.getpid(),
    )


def _arguments(
    asset: ExternalAsset, context: AssetExecutionContext[Any], resources: Mapping[str, BaseModel]
) -> dict[str, Any]:
    """The context (first parameter, annotated or named `context`) and resources by name; nothing is loaded."""
    fn = asset.observe_fn
    assert fn is not None
    hints = type_hints_of(fn)
    kwargs: dict[str, Any] = {}
    for index, (name, parameter) in enumerate(inspect.signature(fn).parameters.items()):
        hint = hints.get(name)
        if context_class(hint) is not None or name == "context":
            if index != 0:
                raise ExecutionError(f"Context must be the first parameter of '{asset.name}'")
            config_type = config_type_of(hint)
            if config_type is not None:
                context.config = config_type()
            kwargs[name] = context
        elif name in resources and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            kwargs[name] = resources[name]
    return kwargs


def _call(asset: ExternalAsset, kwargs: dict[str, Any]) -> Any:
    fn = asset.observe_fn
    assert fn is not None
    returned = fn(**kwargs)
    return asyncio.run(returned) if inspect.iscoroutine(returned) else returned


def _observed(name: str, context: AssetExecutionContext[Any], returned: Any) -> OutputResult:
    """The context's metadata overlaid with the Observation's; any other return value carries nothing."""
    metadata = dict(context.output_metadata)
    data_version = context.data_version
    if isinstance(returned, Observation):
        metadata.update(returned.metadata or {})
        data_version = returned.data_version or data_version
    return OutputResult(name=name, status="succeeded", metadata=coerce_metadata(metadata), data_version=data_version)
