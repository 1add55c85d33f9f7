"""One run from request to RunResult: plan the selection, pick the queues, coordinate, raise if asked."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rivers import defaults
from rivers.coordinator.coordinator import Coordinator, RunListener
from rivers.definitions.executors import Executor, Kubernetes
from rivers.definitions.policies import RetryPolicy
from rivers.distributed.history import embedded_record
from rivers.exceptions import ConfigurationError
from rivers.executors import executor_limits, queues_for
from rivers.launch import check_launch, parse_launch
from rivers.plan import Plan, build_plan
from rivers.resolve import ResolvedGraph
from rivers.results import RunResult, StepResult

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository

_listeners: list[RunListener] = []


@contextmanager
def listening(listener: RunListener) -> Iterator[None]:
    """Send the step events of every run started inside this block to `listener` (the CLI's progress)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _listener_of(listeners: list[RunListener]) -> RunListener | None:
    """One listener that tells every listener of the run (the CLI's progress, the daemon's recorder)."""
    if not listeners:
        return None

    def tell_all(event: str, step: Any, result: Any) -> None:
        for listener in listeners:
            listener(event, step, result)

    return tell_all


@dataclass
class RunRequest:
    outputs: set[str]
    executor: Executor | None
    executor_explicit: bool
    tags: Any
    config: dict[str, Any] | None
    raise_on_error: bool
    run_id: str
    retry: RetryPolicy | None
    job_name: str | None = None


def run_resources(repository: CodeRepository, overrides: dict[str, dict[str, Any]]) -> dict[str, BaseModel]:
    """The repository's resources, with this run's field overrides applied to copies."""
    resources = repository.resources
    for key, fields in overrides.items():
        if key not in resources:
            raise ConfigurationError(f"run config overrides resource '{key}', which the repository does not have")
        resources[key] = overridden(resources[key], fields)
    return resources


def overridden(resource: BaseModel, fields: dict[str, Any]) -> BaseModel:
    """A copy of `resource` with `fields` validated (as its model would) and applied; its other state kept."""
    model = type(resource)
    validated = model.model_validate({**resource.model_dump(), **fields})  # check_launch has named any problem
    names = [name for name, info in model.model_fields.items()
             if name in fields or info.alias in fields or info.validation_alias in fields]
    return resource.model_copy(update={name: getattr(validated, name) for name in names})


def warn_unused_compute(plan: Plan) -> None:
    """`rs.Compute` sizes pods; a step that runs elsewhere gets a warning, not an error (API.md §7)."""
    ignored = [
        key for key, step in plan.steps.items() if step.executor != "kubernetes" and (
            getattr(step.node.definition, "compute", None) is not None
            or getattr(getattr(step.node.definition, "graph", None), "compute", None) is not None)
    ]
    if ignored:
        warnings.warn(
            f"compute= only applies under the Kubernetes executor; ignored for {', '.join(map(repr, ignored))}",
            UserWarning, stacklevel=4,
        )


def execute_run(
    repository: CodeRepository,
    graph: ResolvedGraph,
    request: RunRequest,
    *,
    seed: Mapping[str, StepResult] | None = None,
    listener: RunListener | None = None,
    on_coordinator: Callable[[Coordinator], None] | None = None,
) -> RunResult:
    """Plan the request, coordinate it, raise its first failure if asked.

    `seed` (a resumed run's stored final results), `listener` (step events) and `on_coordinator` (sees the
    coordinator and its queues before the first step is dispatched) are what rivers-coordinator adds.
    """
    defaults.check_environment()
    launch = parse_launch(request.config)
    problems = check_launch(graph, repository.resources, request.config, strict=False)
    if problems:  # before the first step, as rivers 0.6 does for a config naming an unknown asset
        raise ConfigurationError("; ".join(problems))
    executor = launch.executor or request.executor or Executor.parallel()
    explicit = launch.executor is not None or request.executor_explicit
    plan = build_plan(graph, request.outputs, executor, explicit, request.retry)
    warn_unused_compute(plan)
    queues = queues_for(plan, executor)
    record = embedded_record(repository, request) if on_coordinator is None else None  # listed by `rivers runs`
    coordinator = Coordinator(
        run_id=request.run_id, plan=plan, queues=queues,
        resources=run_resources(repository, launch.resources), step_config=launch.steps,
        listener=_listener_of([*_listeners, *(one for one in (listener, record) if one is not None)]),
        seed=seed, executor_limits=executor_limits(executor),
        pods=executor if isinstance(executor, Kubernetes) else None,
    )
    if on_coordinator is not None:
        on_coordinator(coordinator)
    result = coordinator.execute() if record is None else record.watch(coordinator.execute)
    if request.raise_on_error and not result.success:
        exc = coordinator.first_exception()
        if exc is not None:
            raise exc
    return result
