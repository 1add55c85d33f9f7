"""The step runtime: the one place that calls user code, wherever a step runs.

    StepCall (live objects) ──> build context ──> load inputs (IO handlers) ──> call fn
        ──> unwrap Output / Materialization ──> check return type ──> write outputs
        ──> hooks ──> StepResult

The coordinator hands it a StepCall made of the user's own objects; a worker first turns a
StepSpec back into the same StepCall (see spec.py). Nothing else differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TextIO

from pydantic import BaseModel

from rivers import logs
from rivers.definitions.assets import MultiAsset, Observation, SelfDependency
from rivers.definitions.contexts import AssetExecutionContext, TaskExecutionContext
from rivers.definitions.nodes import NodeDefinition
from rivers.definitions.outputs import DynamicOutput, Materialization, Output, coerce_metadata
from rivers.definitions.policies import Hook, HookContext, RetryPolicy, reason_of
from rivers.exceptions import AssetOutputValidationError
from rivers.io.base import InputContext, OutputContext
from rivers.kubernetes.pod_request import PodRequest
from rivers.resolve import OutputSlot, Param
from rivers.results import LogEntry, OutputResult, StepError, StepResult
from rivers.typecheck import describe, matches

logger = logging.getLogger("rivers.runtime")

SKIPPED_REASON = "Skipped: upstream dependency failed"

Fence = Callable[[str], None]  # called with an output's name right before it is written; raises if the attempt is stale


@dataclass(slots=True)
class StepCall:
    """Everything needed to run one attempt of one step, as live objects."""

    run_id: str
    step_key: str
    attempt: int
    definition: NodeDefinition
    params: list[Param]
    outputs: list[OutputSlot]  # the selected outputs
    resources: Mapping[str, BaseModel]
    context_type: type | None = None
    config_type: type[BaseModel] | None = None
    config: dict[str, Any] | None = None
    return_hint: Any = inspect.Signature.empty
    tags: list[str] = field(default_factory=list)
    retry: RetryPolicy | None = None  # the step's effective policy: a failure it retries fires no hook
    members: list[StepCall] = field(default_factory=list)  # a fused graph: its internal tasks, in order
    fence: Fence | None = None  # a rivers-worker's lease check; None where no one else can take the step over
    pod: PodRequest | None = None  # a kubernetes step: the pod its attempt asks for


class StepLog:
    """The captured output of one attempt: context.log records and stdout/stderr lines, as LogEntry.

    With $RIVERS_RUNS_DIR set, each entry is also appended to the run's log file as it happens, after a
    "running" record: how `rivers materialize` learns that a step started and shows its warnings live.
    """

    def __init__(self, run_id: str, step_key: str, attempt: int, tee: bool) -> None:
        self.run_id, self.step_key, self.attempt, self.tee = run_id, step_key, attempt, tee
        self._entries: deque[LogEntry] = deque(maxlen=MAX_LOG_ENTRIES)
        self.dropped = 0
        self._partial: dict[str, str] = {}
        self._lock = threading.Lock()
        base = logs.runs_dir()
        self.path = logs.run_log_path(run_id, base) if base else None
        self._record({"kind": "running", "time": time.time()})

    def add(self, logger_name: str, level: str, message: str, created: float | None = None) -> None:
        entry = LogEntry(logger=logger_name, level=level, message=message, created=created or time.time())
        with self._lock:
            self.dropped += len(self._entries) == MAX_LOG_ENTRIES
            self._entries.append(entry)
        self._record({"kind": "log", **entry.model_dump()})

    @property
    def entries(self) -> list[LogEntry]:
        """What the StepResult carries: the last MAX_LOG_ENTRIES entries, after a line saying how many were left out
        (the run's log file, when written, has them all)."""
        with self._lock:
            kept = list(self._entries)
        if self.dropped:
            note = LogEntry(logger="rivers", level="WARNING", created=kept[0].created,
                            message=f"{self.dropped} earlier lines of this step are not kept in its result")
            kept.insert(0, note)
        return kept

    def write(self, stream: str, text: str) -> None:
        """Text written to stdout or stderr: each complete line becomes an entry."""
        with self._lock:
            lines = (self._partial.pop(stream, "") + text).split("\n")
            if lines[-1]:
                self._partial[stream] = lines[-1]
        for line in lines[:-1]:
            self.add(stream, _STREAM_LEVEL[stream], line)

    def close(self) -> None:
        """The unfinished last line of each stream becomes an entry too."""
        with self._lock:
            partial, self._partial = self._partial, {}
        for stream, line in partial.items():
            self.add(stream, _STREAM_LEVEL[stream], line)

    def _record(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            logs.append_record(self.path, {"step": self.step_key, "attempt": self.attempt, "pid": os.getpid(),
                                           **record})


_STREAM_LEVEL = {"stdout": "INFO", "stderr": "WARNING"}
MAX_LOG_ENTRIES = 10_000  # a step's entries in its StepResult (it travels through Redis): the last ones
_current: ContextVar[StepLog | None] = ContextVar("rivers_step_log", default=None)
_process_log: StepLog | None = None  # a pool process runs one step at a time: its threads' output is that step's
TEE_STREAMS = True  # a step's stdout/stderr also reach the process's own (False in pool processes)


class _Router(io.TextIOBase):
    """sys.stdout / sys.stderr while steps run: a step's writes go to its StepLog (and, with tee, through)."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self.name, self.stream = name, stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        log = _current.get() or _process_log
        if log is not None:
            log.write(self.name, text)
            if not log.tee:
                return len(text)
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            if log is not None and "\n" in text:
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        """The wrapped stream's (a subprocess given sys.stdout writes there directly, uncaptured)."""
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


_routing_lock = threading.Lock()
_routing = 0


def _route_streams(enter: bool) -> None:
    """Install the routers while any step runs here; put the streams back when the last one ends."""
    global _routing
    with _routing_lock:
        _routing += 1 if enter else -1
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if enter and not isinstance(current, _Router):
                setattr(sys, name, _Router(name, current))
            elif not enter and _routing == 0 and isinstance(current, _Router):
                setattr(sys, name, current.stream)


@contextlib.contextmanager
def step_log(run_id: str, step_key: str, attempt: int, *, whole_process: bool = False) -> Iterator[StepLog]:
    """Capture one attempt's output; inside another capture (a fused graph's task), that one goes on."""
    global _process_log
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    log = StepLog(run_id, step_key, attempt, TEE_STREAMS)
    token = _current.set(log)
    if whole_process:
        _process_log = log
    _route_streams(True)
    try:
        yield log
    finally:
        _route_streams(False)
        _current.reset(token)
        if whole_process:
            _process_log = None
        log.close()


class _LogCapture(logging.Handler):
    """context.log records into the step's StepLog."""

    def __init__(self, log: StepLog) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.add(record.name, record.levelname, record.getMessage(), record.created)


class StepExecution:
    """One attempt: prepare arguments, then turn the function's result into written outputs."""

    def __init__(self, call: StepCall, log: StepLog) -> None:
        self.call = call
        self.log = log
        self.context: AssetExecutionContext[Any] | TaskExecutionContext[Any] | None = None
        self.done: dict[str, OutputResult] = {}
        self.values: dict[str, Any] = {}
        self.started = time.time()
        self.clock = time.perf_counter()
        self.capture: _LogCapture | None = None

    # -- before the call -------------------------------------------------------------------
    def arguments(self) -> dict[str, Any]:
        call = self.call
        kwargs: dict[str, Any] = {}
        for param in call.params:
            kind = param.kind
            if kind == "input":
                value = self._load(param, param.source)
                kwargs[param.name] = iter(value) if param.iterate else value
            elif kind == "context":
                kwargs[param.name] = self._context()
            elif kind == "resource":
                kwargs[param.name] = call.resources[param.source]  # type: ignore[index]
            elif kind == "const":
                kwargs[param.name] = param.value
            elif kind == "item":
                item = self._load(param, param.source)[param.value]
                kwargs[param.name] = item.value if isinstance(item, DynamicOutput) else item
            elif kind == "collect":
                kwargs[param.name] = [self._load(param, source) for source in param.value]
            else:  # "self"
                kwargs[param.name] = SelfDependency(self._previous_value(param))
        return kwargs

    def _load(self, param: Param, source: str | None) -> Any:
        assert param.handler is not None and source is not None
        ctx = InputContext(source, self.call.step_key, param.metadata, type_hint=param.type_hint)
        return param.handler.load_input(ctx)

    def _context(self) -> AssetExecutionContext[Any] | TaskExecutionContext[Any]:
        call = self.call
        definition = call.definition
        config: Any = call.config or {}
        if call.config_type is not None:
            config = call.config_type.model_validate(config)
        if call.context_type is TaskExecutionContext:
            context: Any = TaskExecutionContext(task_name=definition.name, run_id=call.run_id,
                                                tags=definition.tags, config=config)
        else:
            context = AssetExecutionContext(
                asset_name=definition.name, run_id=call.run_id, tags=definition.tags,
                kinds=getattr(definition, "kinds", []), group=getattr(definition, "group", None),
                code_version=getattr(definition, "code_version", None), asset_metadata=definition.metadata,
                is_multi_asset=isinstance(definition, MultiAsset),
                output_selection=[slot.name for slot in call.outputs], config=config,
            )
        self.capture = _LogCapture(self.log)
        context.log.addHandler(self.capture)
        self.context = context
        return context

    def _previous_value(self, param: Param) -> Any:
        assert param.handler is not None and param.source is not None
        try:
            return param.handler.load_input(
                InputContext(param.source, param.source, param.metadata, type_hint=param.type_hint)
            )
        except (LookupError, FileNotFoundError):
            return None

    # -- after the call --------------------------------------------------------------------
    def write(self, name: str, value: Any) -> None:
        """Write one output (a plain value, an Output, a Materialization or an Observation)."""
        slot = next((s for s in self.call.outputs if s.name == name), None)
        if slot is None:
            definition = self.call.definition
            if isinstance(definition, MultiAsset) and name not in definition.output_names:
                raise AssetOutputValidationError(
                    f"Multi-asset '{definition.name}' has no output '{name}'; its outputs are "
                    f"{', '.join(repr(n) for n in definition.output_names)}"
                )
            return  # an unselected output of a multi-asset: not written
        context = self.context
        metadata: dict[str, Any] = dict(context.output_metadata) if context is not None else {}
        data_version = context.data_version if context is not None else None
        if isinstance(value, (Materialization, Observation)):  # persisted by the asset itself: no handler, as rivers
            metadata.update(value.metadata or {})
            self._succeeded(name, metadata, value.data_version or data_version, None)
            return
        if isinstance(value, Output):
            metadata.update(value.metadata or {})
            data_version = value.data_version or data_version
            value = value.value
        hint = self.call.return_hint
        if hint is Output:  # `-> rs.Output` annotates the wrapper, not the value inside it
            hint = inspect.Signature.empty
        definition = self.call.definition
        if isinstance(definition, MultiAsset):  # the function returns all outputs: each has its AssetDef's type_hint
            hint = definition.output_type_hint(name)  # None when unset (not the function's `-> dict`), as rivers
            if hint is not None and not matches(value, hint):
                raise AssetOutputValidationError(
                    f"'{name}' of multi-asset '{definition.name}' returned {type(value).__name__}, which does "
                    f"not match its AssetDef type_hint {describe(hint)}"
                )
        elif not matches(value, hint):
            raise AssetOutputValidationError(
                f"'{name}' returned {type(value).__name__}, which does not match its return annotation "
                f"{describe(hint)}"
            )
        keys = fan_out_keys(name, value) if slot.fan_out else None
        if hint is inspect.Signature.empty:  # no annotation: None, as rivers' OutputContext.type_hint
            hint = None
        out_ctx = OutputContext(name, slot.metadata, type_hint=hint, output_metadata=metadata, run_id=self.call.run_id)
        if self.call.fence is not None:
            self.call.fence(name)
        slot.handler.handle_output(out_ctx, value)
        self._succeeded(name, out_ctx.output_metadata, data_version or out_ctx.data_version, value)
        self.done[name].fan_out_keys = keys

    def _succeeded(self, name: str, metadata: Mapping[str, Any] | None, data_version: str | None, value: Any) -> None:
        self.done[name] = OutputResult(name=name, status="succeeded", metadata=coerce_metadata(metadata),
                                       data_version=data_version)
        self.values[name] = value

    def write_result(self, result: Any) -> None:
        """Write a plain function's return value (a dict of outputs for a multi-asset)."""
        definition = self.call.definition
        if not isinstance(definition, MultiAsset):  # one value; a graph's final task also writes the graph
            for slot in self.call.outputs:
                self.write(slot.name, result)
            return
        if not isinstance(result, dict):
            raise AssetOutputValidationError(
                f"Multi-asset '{definition.name}' must return a dict of outputs or yield Output, "
                f"got {type(result).__name__}"
            )
        for name, value in result.items():
            self.write(name, value)

    def write_yielded(self, item: Any) -> None:
        definition = self.call.definition
        if not isinstance(item, (Output, Observation, Materialization)):
            raise AssetOutputValidationError(
                f"Generator multi-asset must yield Output(...), Observation(...), or Materialization(...), "
                f"'{definition.name}' yielded {type(item).__name__}"
            )
        if not item.output_name:
            kind = type(item).__name__
            raise AssetOutputValidationError(
                f"{kind} yielded by '{definition.name}' has no output_name; set {kind}(..., output_name=...)"
            )
        self.write(item.output_name, item)

    def result(self, exc: BaseException | None = None) -> StepResult:
        """The StepResult of this attempt; outputs not written fail with `exc` (or a missing-output error)."""
        call = self.call
        outputs: list[OutputResult] = []
        first_error: StepError | None = None
        first_exc = exc
        for slot in call.outputs:
            done = self.done.get(slot.name)
            if done is not None:
                outputs.append(done)
                continue
            missing = exc or AssetOutputValidationError(
                f"Multi-asset '{call.definition.name}' did not yield output '{slot.name}'"
            )
            first_exc = first_exc or missing
            error = StepError.from_exception(missing)
            first_error = first_error or error
            if slot.name == getattr(call.definition, "graph_name", None):  # the graph is skipped, not failed
                error = StepError(type="ExecutionError", module="rivers.exceptions", message=SKIPPED_REASON)
            outputs.append(OutputResult(name=slot.name, status="failed", error=error))
        if self.capture is not None and self.context is not None:
            self.context.log.removeHandler(self.capture)
        failed = first_error is not None
        if not (failed and will_retry(call.retry, call.attempt, first_exc)):  # hooks fire once per outcome
            self._run_hooks(first_exc if failed else None)
        return StepResult(
            run_id=call.run_id, step_key=call.step_key, attempt=call.attempt,
            status="failed" if failed else "succeeded", outputs=outputs, error=first_error,
            started_at=self.started, duration_s=time.perf_counter() - self.clock, pid=os.getpid(),
        ).with_exception(first_exc if failed else None)

    def _run_hooks(self, error: BaseException | None) -> None:
        """Fire the step's hooks for its outcome: a multi-asset's once per output, like rivers."""
        definition = self.call.definition
        if not definition.hooks:
            return
        config = self.context.config if self.context is not None else None
        if isinstance(definition, MultiAsset):
            self._run_multi_hooks(definition.hooks, error, config)
            return
        values = self.values
        output = values[definition.name] if definition.name in values else (
            next(iter(values.values()), None) if len(values) == 1 else dict(values)
        )
        slot = next((s for s in self.call.outputs if s.name == definition.name), None)
        metadata = {k: v for out in self.done.values() for k, v in out.metadata.items()}
        hc = HookContext(definition.name, self.call.run_id, output if error is None else None, error,
                         _hook_metadata(slot.metadata if slot else definition.metadata, metadata), config)
        fire_hooks(definition.hooks, hc)

    def _run_multi_hooks(self, hooks: list[Hook], error: BaseException | None, config: Any) -> None:
        """Success hooks once per written output; failure hooks once, for the first output not written."""
        run_id = self.call.run_id
        failed: OutputSlot | None = None
        for slot in self.call.outputs:
            done = self.done.get(slot.name)
            if done is None:
                failed = failed or slot
                continue
            metadata = _hook_metadata(slot.metadata, done.metadata)
            fire_hooks(hooks, HookContext(slot.name, run_id, self.values.get(slot.name), None, metadata, config))
        if error is not None and failed is not None:
            metadata = _hook_metadata(failed.metadata, {})
            fire_hooks(hooks, HookContext(failed.name, run_id, None, error, metadata, config))


def _hook_metadata(asset: Mapping[str, Any], output: Mapping[str, Any]) -> dict[str, Any] | None:
    """The asset's metadata with the output's on top, as rivers' `hc.metadata`; None when both are empty."""
    merged = {**asset, **output}
    return merged or None


def will_retry(policy: RetryPolicy | None, attempt: int, exc: BaseException | None) -> bool:
    """Whether the coordinator will run a step whose attempt failed with `exc` again."""
    if policy is None or attempt > policy.max_retries:
        return False
    if exc is None:
        return policy.retries(None)
    return policy.retries(type(exc), reason_of(exc).value)


def fire_hooks(hooks: list[Hook] | None, hc: HookContext[Any]) -> None:
    """Call the hooks that match the outcome (failure when `hc.error` is set); errors are logged, never raised."""
    wanted = hc.hook_type
    for hook in hooks or ():
        if hook.on != wanted or hook.fn is None:  # a hook made with only a name never runs, as in rivers
            continue
        try:
            hook.fn(hc)
        except Exception:  # hooks are never fatal
            logger.exception("%s of '%s' failed", hook, hc.asset_name)


def fan_out_keys(name: str, value: Any) -> list[str]:
    """Instance keys of a fan-out source: DynamicOutput keys, or 0, 1, ... for plain items."""
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"'{name}' is mapped over, so it must return a list, got {type(value).__name__}") from None
    dynamic = [isinstance(item, DynamicOutput) for item in items]
    if any(dynamic) and not all(dynamic):
        raise TypeError(f"Cannot mix DynamicOutput and plain values in the items of '{name}'")
    keys = [str(item.key) for item in items] if dynamic and all(dynamic) else [str(i) for i in range(len(items))]
    if len(set(keys)) != len(keys):
        raise TypeError(f"DynamicOutput keys of '{name}' must be unique")
    return keys


def run_step(call: StepCall) -> StepResult:
    """Run a synchronous step to its StepResult; never raises for errors of user code."""
    with step_log(call.run_id, call.step_key, call.attempt) as log:
        result = run_fused(call, log) if call.members else _run_sync(call, log)
    result.logs = list(log.entries)
    return result


def _run_sync(call: StepCall, log: StepLog) -> StepResult:
    execution = StepExecution(call, log)
    fn = call.definition.fn
    assert fn is not None
    try:
        result = fn(**execution.arguments())
        if isinstance(result, Iterator) and isinstance(call.definition, MultiAsset):
            for item in result:
                execution.write_yielded(item)
        else:
            execution.write_result(result)
    except Exception as exc:  # noqa: BLE001 - reported in the StepResult
        return execution.result(exc)
    return execution.result()


def run_fused(call: StepCall, log: StepLog) -> StepResult:
    """Run a fused graph's internal tasks one after another here; a failure skips what depends on it.
    Their output goes to the graph step's log."""
    started, clock = time.time(), time.perf_counter()
    outputs: list[OutputResult] = []
    failed: set[str] = set()
    first: StepResult | None = None
    for member in call.members:
        if any(p.source in failed for p in member.params):
            error = StepError(type="ExecutionError", module="rivers.exceptions", message=SKIPPED_REASON)
            outputs.extend(OutputResult(name=s.name, status="failed", error=error) for s in member.outputs)
            failed.update(s.name for s in member.outputs)
            continue
        result = asyncio.run(run_step_async(member)) if member.definition.is_async else run_step(member)
        outputs.extend(result.outputs)
        if result.status == "failed":
            failed.update(s.name for s in member.outputs)
            first = first or result
    return StepResult(
        run_id=call.run_id, step_key=call.step_key, attempt=call.attempt,
        status="failed" if first else "succeeded", outputs=outputs, error=first.error if first else None,
        started_at=started, duration_s=time.perf_counter() - clock, pid=os.getpid(), logs=list(log.entries),
    ).with_exception(first.exception if first else None)


async def run_step_async(call: StepCall) -> StepResult:
    """Run an async step (coroutine function or async generator) to its StepResult."""
    with step_log(call.run_id, call.step_key, call.attempt) as log:
        result = await _run_async(call, log)
    result.logs = list(log.entries)
    return result


async def _run_async(call: StepCall, log: StepLog) -> StepResult:
    execution = StepExecution(call, log)
    fn = call.definition.fn
    assert fn is not None
    try:
        produced = fn(**execution.arguments())
        if isinstance(produced, AsyncIterator):
            async for item in produced:
                execution.write_yielded(item)
        else:
            execution.write_result(await produced)
    except Exception as exc:  # noqa: BLE001 - reported in the StepResult
        return execution.result(exc)
    return execution.result()
