"""StepSpec: a step described as JSON, so that it can run in another process.

    StepCall (live objects) ──spec_from_call──> StepSpec (JSON) ──call_from_spec──> StepCall (rebuilt)

Code travels by reference, `Ref(module, qualname)`: the worker imports the module and takes the
attribute, which must be what the spec says it is (a node definition, an IO handler class, a pydantic
model class, a context class) — so a spec cannot name arbitrary callables. Code that cannot be
imported (`<locals>`, lambdas, `__main__`) travels as a cloudpickle blob signed with HMAC-SHA256 and
is verified before it is unpickled. IO handlers and resources travel as their class plus their JSON
configuration and are rebuilt with `model_validate_json`; their secret fields (SecretStr, SecretBytes)
are not in that JSON but beside it, as `rivers.secrets.SecretSpec`s that the rebuilding process resolves.
Values never travel in a spec: inputs are loaded, and outputs written, by the process that runs the step.
"""

from __future__ import annotations

import atexit
import base64
import copy
import dataclasses
import importlib
import inspect
import json
import os
import sys
import threading
import traceback
import typing
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import cloudpickle
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_json

from rivers import secrets, signing
from rivers.definitions.assets import AssetDef, MultiAsset
from rivers.definitions.contexts import CONTEXT_TYPES
from rivers.definitions.nodes import NodeDefinition
from rivers.definitions.policies import Backoff, FailureReason, RetryOn, RetryPolicy
from rivers.definitions.resources import setup_resource, teardown_resource
from rivers.exceptions import BadSignature, SpecError
from rivers.io.base import BaseIOHandler
from rivers.kubernetes.pod_request import PodRequest
from rivers.resolve import OutputSlot, Param, type_hints_of
from rivers.runtime import StepCall
from rivers.secrets import SecretSpec
from rivers.version import RIVERS_VERSION


class Ref(BaseModel, frozen=True):
    """An importable object: `getattr(import_module(module), *qualname.split("."))`.

    `node` names a task inside an importable graph asset (`<graph>/<task>`, in `graph.nodes`).
    """

    module: str
    qualname: str
    node: str | None = None


class Pickled(BaseModel, frozen=True):
    """Code that cannot be imported: cloudpickle bytes (base64) and their HMAC-SHA256."""

    data: str
    signature: str


Code = Ref | Pickled


class ObjectSpec(BaseModel, frozen=True):
    """A pydantic object (IO handler, resource) as its class and its JSON configuration.

    Its secret fields are null in `config_json`; `secrets` says where they go and how to resolve them.
    """

    ref: Code
    config_json: str
    secrets: tuple[SecretSpec, ...] = ()


class ParamSpec(BaseModel):
    name: str
    kind: str  # "context" | "self" | "input" | "resource" | "const" | "item" | "collect"
    source: str | None = None
    handler: int | None = None  # index into StepSpec.handlers
    metadata: dict[str, str] = {}
    value: Any = None  # a literal "const", an "item" index or the "collect" sources, as JSON ...
    value_pickled: Pickled | None = None  # ... or, when JSON cannot carry it, signed pickle
    iterate: bool = False


class OutputSpec(BaseModel):
    name: str
    handler: int
    metadata: dict[str, str] = {}
    fan_out: bool = False


class RetrySpec(BaseModel):
    """A RetryPolicy: the worker needs it to know whether a failed attempt fires the failure hooks."""

    max_retries: int
    retry_on: RetryOn | list[Code | FailureReason]  # in JSON by value: "transient", [{"module": ...}, "timeout"]
    backoff: dict[str, Any] | None = None


PROTOCOL = 4  # the StepSpec format; bumped whenever a spec of one rivers cannot be read by another


class StepSpec(BaseModel):
    """One attempt of one step, as JSON. Type hints are recomputed from the imported function."""

    protocol: int = PROTOCOL
    rivers_version: str = RIVERS_VERSION
    run_id: str
    step_key: str
    attempt: int
    executor: str
    definition: Code
    params: list[ParamSpec]
    outputs: list[OutputSpec]  # the selected outputs
    handlers: list[ObjectSpec]
    resources: dict[str, ObjectSpec]
    context_type: Code | None = None
    config_type: Code | None = None
    config: dict[str, Any] | None = None
    tags: list[str] = []
    retry: RetrySpec | None = None
    members: list[StepSpec] = []  # a fused graph: its internal tasks, in order
    is_async: bool = False  # the process running the step calls it on an event loop (it cannot tell before import)
    pod: PodRequest | None = None  # a kubernetes step: what its pod asks for (the launcher reads it, imports nothing)


class _OutputName(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class SpecHeader(BaseModel):
    """What a worker reads of a spec without importing anything: enough to name and report the step."""

    model_config = ConfigDict(extra="ignore")
    run_id: str = ""
    step_key: str = ""
    attempt: int = 0
    outputs: list[_OutputName] = []

    @property
    def output_names(self) -> list[str]:
        return [out.name for out in self.outputs]


class UnreadableSpec(SpecError):
    """A spec this rivers cannot read; `header` is what could still be read of it (to report the step)."""

    def __init__(self, message: str, header: SpecHeader) -> None:
        super().__init__(message)
        self.header = header


def read_header(spec_json: str | bytes) -> SpecHeader:
    """The identity of the step a spec describes, as far as it can be read (blank where it cannot)."""
    try:
        return SpecHeader.model_validate_json(spec_json)
    except ValidationError:
        return SpecHeader()


def read_spec(spec_json: str | bytes) -> StepSpec:
    """Parse a spec, or raise UnreadableSpec naming the field and both rivers versions."""
    try:  # one parse when all is well (a step's start waits for it); what went wrong is worked out below
        spec = StepSpec.model_validate_json(spec_json)
    except ValidationError:
        pass
    else:
        if spec.protocol == PROTOCOL:
            return spec
    try:
        data = json.loads(spec_json)
    except ValueError as exc:
        raise UnreadableSpec(f"a step spec is not JSON: {exc}", SpecHeader()) from None
    if not isinstance(data, dict):
        raise UnreadableSpec(f"a step spec is a JSON {type(data).__name__}, not an object", SpecHeader())
    header = read_header(spec_json)
    name = f"step '{header.step_key}'" if header.step_key else "a step"
    theirs = f"rivers {data.get('rivers_version', 'unknown')}, spec protocol {data.get('protocol', 'unknown')}"
    ours = f"rivers {RIVERS_VERSION}, spec protocol {PROTOCOL}"
    if data.get("protocol") != PROTOCOL:
        raise UnreadableSpec(
            f"{name} was sent by {theirs}, and this worker runs {ours}: run the same rivers version on "
            "coordinators and workers", header)
    try:
        return StepSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = [str(part) for part in first["loc"] if "[" not in str(part)]  # without pydantic's union tags
        field = ".".join(path) or "(the whole spec)"
        raise UnreadableSpec(
            f"{name}: cannot read field '{field}' of its spec ({first['msg']}); the spec was sent by {theirs}, "
            f"this worker runs {ours}", header) from None


# -- building a spec (the coordinator's side) ----------------------------------------------------

_definition_codes: weakref.WeakKeyDictionary[NodeDefinition, Code] = weakref.WeakKeyDictionary()
_class_codes: dict[type, Code] = {}


def spec_from_call(call: StepCall, executor: str) -> StepSpec:
    """Describe a live StepCall as a StepSpec; raises SpecError naming the step when it cannot."""
    step = call.step_key
    handlers: list[ObjectSpec] = []
    handler_index: dict[int, int] = {}

    def handler_id(handler: BaseIOHandler) -> int:
        if id(handler) not in handler_index:
            handler_index[id(handler)] = len(handlers)
            handlers.append(object_spec(handler, step))
        return handler_index[id(handler)]

    params: list[ParamSpec] = []
    resources: dict[str, ObjectSpec] = {}
    for param in call.params:
        index = handler_id(param.handler) if param.handler is not None else None
        params.append(ParamSpec(name=param.name, kind=param.kind, source=param.source, handler=index,
                                metadata=param.metadata, iterate=param.iterate, **_value_fields(param.value, step)))
        if param.kind == "resource":
            assert param.source is not None
            resources[param.source] = object_spec(call.resources[param.source], step, key=param.source)
    outputs = [OutputSpec(name=slot.name, handler=handler_id(slot.handler), metadata=slot.metadata,
                          fan_out=slot.fan_out) for slot in call.outputs]
    return StepSpec(
        run_id=call.run_id, step_key=step, attempt=call.attempt, executor=executor,
        definition=definition_code(call.definition), params=params, outputs=outputs, handlers=handlers,
        resources=resources,
        context_type=class_code(call.context_type, step) if call.context_type is not None else None,
        config_type=class_code(call.config_type, step) if call.config_type is not None else None,
        config=call.config, tags=list(call.tags),
        retry=retry_spec(call.retry, step) if call.retry is not None else None,
        members=[spec_from_call(member, executor) for member in call.members],
        is_async=call.definition.is_async and not call.members,
        pod=call.pod,
    )


T = TypeVar("T")


class Prepared(Generic[T]):
    """What a queue sends for an attempt (its spec JSON, a Redis job's data), built ahead while the coordinator
    waits: a step's downstream leaves without waiting for it. `build` raises SpecError for a step it cannot send."""

    MAX_ENTRIES = 10_000  # what was built for steps that never ran (skipped) is dropped oldest first past this

    def __init__(self, build: Callable[[StepCall], T]) -> None:
        self.build = build
        self._built: dict[tuple[str, str, int], T] = {}

    def prepare(self, call: StepCall) -> None:
        key = (call.run_id, call.step_key, call.attempt)
        if key in self._built:
            return
        try:
            built = self.build(call)
        except SpecError:
            return  # put() builds it again and reports the error
        if len(self._built) >= self.MAX_ENTRIES:
            self._built.pop(next(iter(self._built)))
        self._built[key] = built

    def built(self, call: StepCall) -> T | None:
        """What was built ahead for `call`, left in place; None if nothing was."""
        return self._built.get((call.run_id, call.step_key, call.attempt))

    def take(self, call: StepCall) -> T:
        """What was built ahead for `call`, else built now (SpecError naming the step when it cannot be)."""
        key = (call.run_id, call.step_key, call.attempt)
        return self._built.pop(key) if key in self._built else self.build(call)


def spec_json_of(call: StepCall, executor: str, check: Callable[[StepSpec], None] | None = None) -> str:
    """The spec JSON of `call` on `executor`; `check` (a queue's own refusal) may raise SpecError first."""
    spec = spec_from_call(call, executor)
    if check is not None:
        check(spec)
    return spec.model_dump_json()


def _value_fields(value: Any, step: str) -> dict[str, Any]:
    if value is None or isinstance(value, str | int | float | bool):
        return {"value": value}
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return {"value": value}
    try:
        return {"value_pickled": _pickled(value)}
    except Exception as exc:
        raise SpecError(f"step '{step}': a constant argument cannot be sent to a worker: {exc}") from exc


def retry_spec(policy: RetryPolicy, step: str) -> RetrySpec:
    retry_on = policy.retry_on
    classes: RetryOn | list[Code | FailureReason] = (
        retry_on if isinstance(retry_on, RetryOn)
        else [item if isinstance(item, FailureReason) else class_code(item, step) for item in retry_on]
    )
    backoff = dataclasses.asdict(policy.backoff) if policy.backoff is not None else None
    return RetrySpec(max_retries=policy.max_retries, retry_on=classes, backoff=backoff)


def definition_code(definition: NodeDefinition) -> Code:
    """A node definition by reference when importing it gives this very object, else signed pickle."""
    code = _definition_codes.get(definition)
    if code is None:
        code = _ref_if_importable(definition) or _graph_node_ref(definition) or _pickled(_portable_copy(definition))
        _definition_codes[definition] = code
    return code


def _graph_node_ref(definition: NodeDefinition) -> Ref | None:
    """A task inside a graph asset, by reference to the (importable) graph and the task's node name."""
    graph = getattr(definition, "graph", None)
    if graph is None or graph is definition or definition not in getattr(graph, "nodes", ()):
        return None
    ref = _ref_if_importable(graph)
    return ref.model_copy(update={"node": definition.name}) if ref is not None else None


def class_code(cls: type, step: str) -> Code:
    code = _class_codes.get(cls)
    if code is None:
        try:
            code = _ref_if_importable(cls) or _pickled(cls)
        except Exception as exc:  # cloudpickle raises many types
            raise SpecError(f"step '{step}': class {cls.__qualname__} cannot be sent to a worker: {exc}") from exc
        _class_codes[cls] = code
    return code


def object_spec(obj: BaseModel, step: str, key: str | None = None) -> ObjectSpec:
    """A handler or resource (injected as `key`) as (class, JSON); its secrets never enter the JSON.

    Raises SpecError naming the step when the object has no JSON form, or its secrets cannot be sent
    the way this process is configured to (`rivers.secrets`).
    """
    owner = key if key is not None else type(obj).__name__
    try:
        dumped, sealed = secrets.extract(obj, owner)
        config_json = to_json(dumped).decode()
    except secrets.SecretsConfigurationError as exc:
        raise secrets.SecretsConfigurationError(f"step '{step}': {_owner_label(type(obj), key)}: {exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"step '{step}': {_owner_label(type(obj), key)} has a SecretBytes value that is not "
                        "UTF-8, which JSON cannot carry") from None
    except Exception as exc:  # any field that has no JSON form
        raise SpecError(
            f"step '{step}': {type(obj).__name__} cannot be sent to a worker as JSON "
            f"(give it an importable class and JSON-serialisable fields): {exc}"
        ) from exc
    return ObjectSpec(ref=class_code(type(obj), step), config_json=config_json, secrets=sealed)


def _owner_label(cls: type, key: str | None) -> str:
    return f"resource '{key}' ({cls.__name__})" if key is not None else f"IO handler {cls.__name__}"


def _ref_if_importable(obj: Any) -> Ref | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<" in qualname:
        return None
    try:
        found = _import(module, qualname)
    except (ImportError, AttributeError):
        return None
    return Ref(module=module, qualname=qualname) if found is obj else None


def _pickled(obj: Any) -> Pickled:
    data = cloudpickle.dumps(obj)
    return Pickled(data=base64.b64encode(data).decode(), signature=signing.sign(data))


def _portable_copy(definition: NodeDefinition) -> NodeDefinition:
    """The definition without what the worker gets from the spec (handlers) or never uses (retry)."""
    portable = copy.copy(definition)
    portable.io_handler = None
    portable.retry = None
    if hasattr(portable, "deps"):
        portable.deps = []  # type: ignore[attr-defined]
    if isinstance(portable, MultiAsset):
        portable.output_defs = [AssetDef(out.name, None, out.metadata) for out in portable.output_defs]
    return portable


# -- rebuilding a call (the worker's side) -------------------------------------------------------

_lock = threading.Lock()
_code_cache: dict[Code, Any] = {}
_object_cache: dict[tuple[Code, str, tuple[str, ...]], BaseModel] = {}  # (class, JSON, secret values)
_hints_cache: dict[int, dict[str, Any]] = {}
_set_up: list[BaseModel] = []


def call_from_spec(spec: StepSpec) -> StepCall:
    """Rebuild the StepCall a spec describes; raises SpecError (naming the step) when it cannot."""
    step = spec.step_key
    definition = load_code(spec.definition, step, _is_definition, "a rivers Asset or Task")
    assert definition.fn is not None
    hints = _hints(definition)
    handlers = [rebuild(obj, step, BaseIOHandler, "an IO handler") for obj in spec.handlers]
    params: list[Param] = []
    for p in spec.params:
        hint = hints.get(p.name)
        if p.kind == "self":
            args = typing.get_args(hint)
            hint = args[0] if args else None
        handler = handlers[p.handler] if p.handler is not None else None
        value = p.value
        if p.value_pickled is not None:
            value = load_code(p.value_pickled, step, lambda _: True, "a constant")
        params.append(Param(p.name, p.kind, p.source, hint, handler, dict(p.metadata), value, p.iterate))
    outputs = [OutputSlot(o.name, handlers[o.handler], dict(o.metadata), True, o.fan_out) for o in spec.outputs]
    resources = {key: rebuild(obj, step, BaseModel, "a pydantic model", setup=True, key=key)
                 for key, obj in spec.resources.items()}
    context_type = config_type = None
    if spec.context_type is not None:
        context_type = load_code(spec.context_type, step, lambda c: c in CONTEXT_TYPES, "a context class")
    if spec.config_type is not None:
        config_type = load_code(spec.config_type, step, _is_model_class, "a pydantic model class")
    return StepCall(
        run_id=spec.run_id, step_key=step, attempt=spec.attempt, definition=definition, params=params,
        outputs=outputs, resources=resources, context_type=context_type, config_type=config_type,
        config=spec.config, return_hint=hints.get("return", inspect.Signature.empty), tags=list(spec.tags),
        retry=_retry_policy(spec.retry, step) if spec.retry is not None else None,
        members=[call_from_spec(member) for member in spec.members],
    )


def _retry_policy(spec: RetrySpec, step: str) -> RetryPolicy:
    retry_on: RetryOn | list[type[BaseException] | FailureReason]
    if isinstance(spec.retry_on, RetryOn):
        retry_on = spec.retry_on
    else:
        retry_on = [item if isinstance(item, FailureReason)
                    else load_code(item, step, _is_exception_class, "an exception class") for item in spec.retry_on]
    backoff = Backoff(**spec.backoff) if spec.backoff is not None else None
    return RetryPolicy(spec.max_retries, backoff=backoff, retry_on=retry_on)


def load_code(code: Code, step: str, allowed: Callable[[Any], bool], expected: str) -> Any:
    """Import (or verify and unpickle) `code`, refusing anything that is not `expected`."""
    found = _code_cache.get(code)
    if found is None:
        try:
            if isinstance(code, Ref):
                found = _import(code.module, code.qualname)
                if code.node is not None:
                    found = next(n for n in getattr(found, "nodes", ()) if n.name == code.node)
            else:
                data = base64.b64decode(code.data)
                signing.verify(data, code.signature)
                found = cloudpickle.loads(data)
        except BadSignature as exc:
            raise SpecError(f"step '{step}': {exc}") from exc
        except (Exception, SystemExit) as exc:  # import errors of user modules are of any type, even exits
            raise SpecError(f"step '{step}': cannot load its code: {type(exc).__name__}: {exc}"
                            f"{_searched(exc, code)}") from exc
        _code_cache[code] = found
    if not allowed(found):  # checked on every use: one object may be fine as a config type, not as a handler
        where = f"{code.module}:{code.qualname}" if isinstance(code, Ref) else "a pickled object"
        raise SpecError(f"step '{step}': {where} is not {expected}, refusing to use it")
    return found


def rebuild(
    obj: ObjectSpec, step: str, base: type[BaseModel], expected: str, setup: bool = False, key: str = ""
) -> Any:
    """The object an ObjectSpec describes, cached per (class, configuration, secrets) in this process.

    With `setup`, a resource (injected as `key`) is set up the first time it is rebuilt here. Its secrets are
    resolved first (`rivers.secrets.resolve`): one that cannot be raises SpecError naming the resource or
    handler, the field and the variable to set. No message raised here carries a secret's value.
    """
    cls = load_code(obj.ref, step, lambda c: isinstance(c, type) and issubclass(c, base), expected)
    label = _owner_label(cls, key or None)
    values = secrets.resolve(obj.secrets, f"step '{step}': {label}") if obj.secrets else ()
    cache_key = (obj.ref, obj.config_json, values)
    with _lock:
        found = _object_cache.get(cache_key)
    if found is not None:
        if not isinstance(found, base):
            raise SpecError(f"step '{step}': {type(found).__name__} is not {expected}, refusing to use it")
        return found
    try:
        found = cls.model_validate_json(secrets.inject(obj.config_json, obj.secrets, values))
    except ValidationError as exc:  # the user's model refuses its configuration; never echo the input
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(the object)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise SpecError(
            f"step '{step}': cannot rebuild {cls.__name__} from its JSON: {secrets.scrub(problems, values)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a validator of the user's model raised something else
        raise SpecError(f"step '{step}': cannot rebuild {cls.__name__} from its JSON: "
                        f"{secrets.scrub(f'{type(exc).__name__}: {exc}', values)}") from _unless_secret(exc, values)
    with _lock:
        if cache_key in _object_cache:  # another thread rebuilt it meanwhile
            return _object_cache[cache_key]
        if setup:
            try:
                setup_resource(found)
            except Exception as exc:  # noqa: BLE001 - the user's setup(): name the step and the resource
                message = secrets.scrub(f"{type(exc).__name__}: {exc}", values)
                raise SpecError(
                    f"step '{step}': resource '{key}' ({cls.__name__}) failed in setup(): {message}"
                ) from _unless_secret(exc, values)
            if not _set_up:
                atexit.register(teardown_rebuilt)
            _set_up.append(found)
        _object_cache[cache_key] = found
    return found


def _unless_secret(exc: BaseException, values: tuple[str, ...]) -> BaseException | None:
    """`exc` as the cause of an error that a report carries, unless its traceback shows a secret's value."""
    if values:
        text = "".join(traceback.format_exception(exc))
        if any(value and value in text for value in values):
            return None
    return exc


def teardown_rebuilt() -> None:
    """Tear down the resources this process rebuilt (at exit of a worker process)."""
    with _lock:
        rebuilt, _set_up[:] = list(_set_up), []
        for key in [k for k, v in _object_cache.items() if any(v is r for r in rebuilt)]:
            del _object_cache[key]
    for resource in reversed(rebuilt):
        try:
            teardown_resource(resource)
        except Exception as exc:  # noqa: BLE001 - one failing teardown must not stop the others
            print(f"rivers: teardown of {type(resource).__name__} failed: {exc!r}", file=sys.stderr)


def _hints(definition: NodeDefinition) -> dict[str, Any]:
    hints = _hints_cache.get(id(definition))
    if hints is None:
        assert definition.fn is not None
        hints = _hints_cache[id(definition)] = type_hints_of(definition.fn)
    return hints


def _searched(exc: BaseException, code: Code) -> str:
    """Where this process looked for a step's module that is not there (its directory, its sys.path)."""
    if not (isinstance(exc, ModuleNotFoundError) and isinstance(code, Ref) and exc.name
            and (code.module == exc.name or code.module.startswith(exc.name + "."))):
        return ""
    searched = ", ".join(path or "''" for path in sys.path)
    return (f"; start rivers-worker in the project's directory or add it with rivers-worker --path DIR (this "
            f"process runs in {os.getcwd()} and searched sys.path: {searched})")


def _import(module: str, qualname: str) -> Any:
    found: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _is_definition(value: Any) -> bool:
    return isinstance(value, NodeDefinition) and value.fn is not None


def _is_exception_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _is_model_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


StepSpec.model_rebuild()
