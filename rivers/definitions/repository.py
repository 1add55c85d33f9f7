"""CodeRepository: the registry users materialize from (API.md §3). Thin: resolve -> plan -> coordinate."""

from __future__ import annotations

import inspect
import threading
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rivers.definitions.assets import Asset, ExternalAsset
from rivers.definitions.executors import Executor
from rivers.definitions.jobs import Job
from rivers.definitions.nodes import NodeDefinition
from rivers.definitions.policies import RetryPolicy
from rivers.definitions.resources import coerce_resource, setup_resource, teardown_resource
from rivers.definitions.tasks import Task
from rivers.definitions.unsupported import refuse_if_used
from rivers.exceptions import (
    AssetNotFoundError,
    ConfigurationError,
    GraphValidationError,
    NodeNotFoundError,
)
from rivers.io.base import BaseIOHandler, InputContext
from rivers.io.memory import InMemoryIOHandler
from rivers.resolve import ResolvedGraph, Resolver, check_job, job_outputs, resolve_retry
from rivers.results import RunResult

if TYPE_CHECKING:
    from rivers.run import RunRequest


class CodeRepository:
    """Assets, tasks, jobs and resources; resolved lazily on first use, before any step runs."""

    def __init__(
        self,
        assets: list[Asset],
        tasks: list[Task] | None = None,
        jobs: list[Job] | None = None,
        default_executor: Executor | None = None,
        resources: dict[str, Any] | None = None,
        retries: dict[str, RetryPolicy] | None = None,
        default_retry_policy: RetryPolicy | str | None = None,
        default_io_handler: BaseIOHandler | None = None,
        *,
        schedules: list[Any] | None = None,
        sensors: list[Any] | None = None,
        partition_defs: dict[str, Any] | None = None,
        run_queue: Any = None,
        run_backend: Any = None,
        pool_limits: dict[str, int] | None = None,
    ) -> None:
        refuse_if_used(
            "CodeRepository", schedules=schedules, sensors=sensors, partition_defs=partition_defs,
            run_queue=run_queue, run_backend=run_backend, pool_limits=pool_limits,
        )
        self._resources: dict[str, BaseModel] = {k: coerce_resource(k, v) for k, v in (resources or {}).items()}
        self._definitions: list[NodeDefinition] = [*assets, *(tasks or [])]  # checked at resolution
        self._jobs = list(jobs or [])
        self.default_executor = default_executor
        self._retries = dict(retries or {})
        self._default_retry = default_retry_policy
        self._default_io_handler = default_io_handler
        self._memory = InMemoryIOHandler()
        self._graph: ResolvedGraph | None = None
        self._set_up: list[BaseModel] = []
        self._lock = threading.RLock()

    # -- resolution -------------------------------------------------------------------------
    def _resolve(self, setup: bool = True) -> ResolvedGraph:
        with self._lock:
            if self._graph is None:
                for item in self._definitions:  # lazily, like everything but resources (API.md §3)
                    if not isinstance(item, NodeDefinition):
                        raise GraphValidationError(
                            f"CodeRepository takes Asset, Task and BashTask definitions, got {_what(item)}"
                        )
                if self._default_io_handler is not None and not isinstance(self._default_io_handler, BaseIOHandler):
                    raise ConfigurationError(
                        f"default_io_handler must be a BaseIOHandler, got {type(self._default_io_handler).__name__}"
                    )
                resolver = Resolver(
                    self._definitions, self._resources, self._default_io_handler or self._memory,
                    self._default_io_handler is not None, self._retries,
                )
                graph = resolver.resolve()
                self._default_retry_policy = resolve_retry(
                    self._default_retry, self._retries, "in default_retry_policy"
                )
                self._validate_jobs(graph)
                self._graph = graph
            if setup:  # validate() never sets resources up, as rivers 0.6 (issue 10)
                self._setup_resources()
            return self._graph

    def _validate_jobs(self, graph: ResolvedGraph) -> None:
        seen: set[str] = set()
        for job in self._jobs:
            if job.name in seen:
                raise GraphValidationError(f"Duplicate job name: '{job.name}'")
            seen.add(job.name)
            resolve_retry(job.retry, self._retries, f"referenced by job '{job.name}'")
            check_job(graph, job)  # rivers 0.6's job messages (issue 10)

    def _job_outputs(self, graph: ResolvedGraph, job: Job) -> set[str]:
        return job_outputs(graph, job)

    def _setup_resources(self) -> None:
        for key, value in self._resources.items():
            if any(value is done for done in self._set_up):  # an earlier resolution failed after it
                continue
            try:
                setup_resource(value)
            except Exception as exc:
                raise ConfigurationError(
                    f"Resource '{key}' ({type(value).__name__}) failed in setup(): {type(exc).__name__}: {exc}"
                ) from exc
            self._set_up.append(value)

    def validate(self) -> None:
        """Resolve the repository now; raises the first problem found. Sets no resource up."""
        self._resolve(setup=False)

    def resolve(self, storage: Any = None) -> None:
        """Validate and resolve now, as rivers 0.6 does before a run (which needs no storage here)."""
        refuse_if_used("CodeRepository.resolve", storage=storage)
        self._resolve()

    def observe(self, asset_names: list[str] | str | None = None, *, raise_on_error: bool = True) -> RunResult:
        """Run the observe functions of the external assets (those named in `asset_names`, or all).

        Names that are not observable external assets are passed over; with nothing to observe the
        result is a successful no-op with an empty `run_id`. Metadata and data versions land in
        `step_results`; the first failure is re-raised after all ran unless `raise_on_error=False`.
        """
        from rivers.observe import observe_assets

        self._resolve()
        wanted = [asset_names] if isinstance(asset_names, str) else asset_names
        observable = sorted(
            (d for d in self._definitions
             if isinstance(d, ExternalAsset) and d.observe_fn is not None and (wanted is None or d.name in wanted)),
            key=lambda d: d.name,
        )
        return observe_assets(observable, self._resources, raise_on_error=raise_on_error)

    # -- lookups ----------------------------------------------------------------------------
    @property
    def assets(self) -> dict[str, Asset]:
        graph = self._resolve()
        found: dict[str, Asset] = {}
        for out in graph.producer:
            definition = graph.node_of(out).definition
            if isinstance(definition, Asset):
                found[out] = definition
            elif out in graph.graphs:
                found[out] = graph.graphs[out]
        return found

    def get_job(self, name: str) -> Job:
        self._resolve()
        for job in self._jobs:
            if job.name == name:
                return job.bound_to(self)
        raise NodeNotFoundError(f"Job '{name}' not found in the repository")

    def io_handler_for_output(self, name: str) -> BaseIOHandler:
        graph = self._resolve()
        if name not in graph.producer:
            raise NodeNotFoundError(f"Node '{name}' not found in the repository")
        return graph.node_of(name).outputs[name].handler

    def load_node(self, name: str, *, type_hint: Any = None, partition_key: Any = None) -> Any:
        """Load a node's last written value through its IO handler (fan-out instances too)."""
        refuse_if_used("CodeRepository.load_node", partition_key=partition_key)
        graph = self._resolve()
        owner = name if name in graph.producer else name.rpartition("__")[0]
        is_instance = owner != name and getattr(graph.nodes.get(owner), "definition", None) is not None and getattr(
            graph.nodes[owner].definition, "fan_out_source", None) is not None
        if owner not in graph.producer or (owner != name and not is_instance):
            raise NodeNotFoundError(f"Node '{name}' not found in the repository")
        slot = graph.node_of(owner).outputs[owner]
        return slot.handler.load_input(InputContext(name, None, slot.metadata, type_hint=type_hint))

    # -- runs -------------------------------------------------------------------------------
    def materialize(
        self,
        selection: list[str] | str | None = None,
        tags: dict[str, str] | list[str] | None = None,
        raise_on_error: bool = True,
        config: dict[str, Any] | None = None,
        run_id_override: str | None = None,
        include_upstream: bool = False,
        resume: bool = False,
        retry: RetryPolicy | str | None = None,
        *,
        partition_key: Any = None,
    ) -> RunResult:
        """Run the selection (everything by default) and return its RunResult."""
        from rivers.run import execute_run

        refuse_if_used("CodeRepository.materialize", partition_key=partition_key)
        if resume:
            raise NotImplementedError("materialize(resume=True) needs a run store; it is not supported yet")
        request = self._run_request(
            selection=selection, include_upstream=include_upstream, tags=tags, config=config,
            raise_on_error=raise_on_error, run_id=run_id_override or str(uuid.uuid4()), retry=retry,
        )
        return execute_run(self, self._resolve(), request)

    def submit(
        self,
        selection: list[str] | str | None = None,
        tags: dict[str, str] | list[str] | None = None,
        raise_on_error: bool = True,
        config: dict[str, Any] | None = None,
        run_id_override: str | None = None,
        include_upstream: bool = False,
        resume: bool = False,
        retry: RetryPolicy | str | None = None,
        *,
        partition_key: Any = None,
    ) -> Any:
        """Submit the run to rivers-coordinator through RIVERS_REDIS_URL; returns a RunHandle at once.

        The coordinator runs it with its own copy of this repository (`rivers-coordinator --repo ...`);
        `raise_on_error` applies to nothing here (see `RunHandle.wait`).
        """
        from rivers.distributed.runs import SubmittedRun, new_run_id, repository_name
        from rivers.distributed.runs import submit as submit_run

        refuse_if_used("CodeRepository.submit", partition_key=partition_key)
        graph = self._resolve()
        self._selected_outputs(graph, selection, include_upstream)  # unknown names fail here, not remotely
        if resume:
            raise NotImplementedError("submit(resume=True) is not supported; the coordinator resumes by itself")
        if retry is not None and not isinstance(retry, str):
            raise ConfigurationError("submit(retry=) takes the name of a policy in CodeRepository(retries=...)")
        names = [selection] if isinstance(selection, str) else list(selection) if selection is not None else None
        return submit_run(SubmittedRun(run_id=run_id_override or new_run_id(), selection=names, tags=tags,
                                       config=config, include_upstream=include_upstream, retry=retry,
                                       repository=repository_name(self)))

    def _execute_job(
        self, job: Job, *, tags: Any, config: dict[str, Any] | None, raise_on_error: bool
    ) -> RunResult:
        from rivers.run import execute_run

        request = self._run_request(job=job, tags=tags, config=config, raise_on_error=raise_on_error,
                                    run_id=str(uuid.uuid4()))
        return execute_run(self, self._resolve(), request)

    def _run_request(
        self,
        *,
        run_id: str,
        selection: list[str] | str | None = None,
        include_upstream: bool = False,
        job: Job | None = None,
        tags: Any = None,
        config: dict[str, Any] | None = None,
        raise_on_error: bool = True,
        retry: RetryPolicy | str | None = None,
    ) -> RunRequest:
        """What to run, on which executor, with which retry policy: for a job or for a selection."""
        from rivers.run import RunRequest

        graph = self._resolve()
        if job is not None:
            outputs = self._job_outputs(graph, job)
            executor = job.executor or self.default_executor
            retry = retry or job.retry
            owner = f"referenced by job '{job.name}'"
        else:
            outputs = self._selected_outputs(graph, selection, include_upstream)
            executor = self.default_executor
            owner = "referenced by job '<materialize>'"  # as rivers 0.6.2 names a materialize run
        return RunRequest(
            outputs=outputs, executor=executor, executor_explicit=executor is not None, tags=tags, config=config,
            raise_on_error=raise_on_error, run_id=run_id,
            retry=resolve_retry(retry, self._retries, owner) or self._default_retry_policy,
            job_name=job.name if job is not None else None,
        )

    def _selected_outputs(
        self, graph: ResolvedGraph, selection: list[str] | str | None, include_upstream: bool
    ) -> set[str]:
        if selection is None:
            return {out for out in graph.producer if graph.node_of(out).runnable}
        names = [selection] if isinstance(selection, str) else list(selection)
        outputs: set[str] = set()
        for name in names:
            named = graph.outputs_named(name)
            if named is None:
                raise AssetNotFoundError(f"Asset '{name}' not found in the repository")
            outputs |= named
        if include_upstream:
            stack = list(outputs)
            while stack:
                for need in graph.node_of(stack.pop()).needs:
                    if need not in outputs:
                        outputs.add(need)
                        stack.append(need)
        return {out for out in outputs if graph.node_of(out).runnable}

    @property
    def resources(self) -> dict[str, BaseModel]:
        return dict(self._resources)

    # -- lifecycle --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Tear down the resources set up at resolution."""
        with self._lock:
            while self._set_up:
                teardown_resource(self._set_up.pop())
            self._graph = None  # the next use resolves (and sets resources up) again

    def __enter__(self) -> CodeRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _what(item: Any) -> str:
    """How an entry that is not a definition is named: a function by its name, with the decorator it lacks."""
    if inspect.isfunction(item):
        return (f"function '{item.__name__}' (module {item.__module__}), which is not decorated: put @rs.Asset "
                f"(or @rs.Task) on it")
    return type(item).__name__
