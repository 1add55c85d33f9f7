"""Resolution: bind every parameter of every node once and reject bad graphs before anything runs.

The result, a `ResolvedGraph`, is what the planner and the step runtime work from: each node's
parameters already know whether they receive the context, `self`, an upstream value (and through
which IO handler) or a resource.
"""

from __future__ import annotations

import difflib
import inspect
import json
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from rivers.definitions.assets import AssetDef, ExternalAsset, MultiAsset, SelfDependency
from rivers.definitions.contexts import CONTEXT_TYPES, AssetExecutionContext, TaskExecutionContext
from rivers.definitions.executors import EXECUTOR_KEYS
from rivers.definitions.graph import CollectNode, GraphAsset, GraphTaskNode, GraphValueNode
from rivers.definitions.nodes import NodeDefinition
from rivers.definitions.policies import RetryPolicy
from rivers.definitions.tasks import Task
from rivers.exceptions import (
    AssetDefinitionError,
    ConfigurationError,
    DuplicateNameError,
    ExecutionError,
    GraphValidationError,
    NodeNotFoundError,
)
from rivers.io.base import BaseIOHandler

EXECUTOR_METADATA = "rivers/executor"
NODE_EXECUTOR_METADATA = "rivers/node/executor"


@dataclass(slots=True)
class Param:
    """How one parameter of a step function gets its value."""

    name: str
    # "context" | "self" | "input" | "resource" | "const" (a literal wired in a graph body) |
    # "item" (one item of a fan-out source) | "collect" (the values of every instance of a mapped task)
    kind: str
    source: str | None = None  # upstream output name, or resource key
    type_hint: Any = None
    handler: BaseIOHandler | None = None  # loads "input" / "self"
    metadata: dict[str, str] = field(default_factory=dict)  # the upstream's metadata (InputContext)
    value: Any = None  # "const": the constant; "item": the item's index; "collect": the instance outputs
    iterate: bool = False  # hand the value over as an iterator (a collect_stream)


@dataclass(slots=True)
class OutputSlot:
    """One output of a node and the handler that writes it."""

    name: str
    handler: BaseIOHandler
    metadata: dict[str, str]
    explicit_handler: bool  # False when the handler is the repository's in-memory fallback
    fan_out: bool = False  # a mapped task runs once per item of this output


@dataclass
class ResolvedNode:
    """A node with every parameter bound; a planner step is made from one of these."""

    name: str
    definition: NodeDefinition
    params: list[Param]
    outputs: dict[str, OutputSlot]
    needs: set[str]  # upstream output names: inputs and ordering-only deps
    context_type: type | None
    config_type: type[BaseModel] | None
    return_hint: Any
    retry: RetryPolicy | None
    executor_key: str | None  # from rivers/executor metadata
    members: list[ResolvedNode] = field(default_factory=list)  # a fused graph: its internal nodes, in order

    @property
    def runnable(self) -> bool:
        return not isinstance(self.definition, ExternalAsset)


@dataclass
class ResolvedGraph:
    nodes: dict[str, ResolvedNode]  # node name -> node (multi-assets under their own name)
    producer: dict[str, str]  # output name -> node name
    graphs: dict[str, GraphAsset] = field(default_factory=dict)  # graph asset name -> definition

    def members(self, name: str) -> list[str]:
        """The node names a selected name stands for: a graph's internal nodes, or the node itself."""
        if name in self.graphs:
            return [node.name for node in self.graphs[name].nodes]
        return [name] if name in self.nodes else [self.producer[name]]

    def outputs_named(self, name: str) -> set[str] | None:
        """The outputs a name selects: a graph's internal ones, a node's, or the output itself; None if unknown."""
        if name in self.graphs:
            return {out for member in self.members(name) for out in self.nodes[member].outputs}
        if name in self.nodes:
            return set(self.nodes[name].outputs)
        return {name} if name in self.producer else None

    def node_of(self, output: str) -> ResolvedNode:
        return self.nodes[self.producer[output]]

    def downstream_nodes(self) -> dict[str, set[str]]:
        down: dict[str, set[str]] = {name: set() for name in self.nodes}
        for node in self.nodes.values():
            for out in node.needs:
                down[self.producer[out]].add(node.name)
        return down


def type_hints_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """Annotations with string annotations evaluated; raw annotations where that fails."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - some forward ref is unresolvable: resolve the others one by one
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        shim = types.SimpleNamespace(__annotations__={name: annotation}, __globals__=namespace)
        try:
            hints[name] = typing.get_type_hints(shim)[name]
        except Exception:  # noqa: BLE001 - e.g. a TYPE_CHECKING-only import: keep the string
            hints[name] = annotation
    return hints


def context_class(hint: Any) -> type | None:
    """The context class a hint names (bare or subscripted with a config model), else None."""
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, CONTEXT_TYPES):
        return origin
    if isinstance(hint, str) and hint.split("[")[0].split(".")[-1] in ("AssetExecutionContext", "TaskExecutionContext"):
        return AssetExecutionContext if hint.split("[")[0].endswith("AssetExecutionContext") else TaskExecutionContext
    return None


def config_type_of(hint: Any) -> type[BaseModel] | None:
    args = typing.get_args(hint)
    if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def is_self_dependency(name: str, hint: Any) -> bool:
    return name == "self" and (typing.get_origin(hint) or hint) is SelfDependency


class Resolver:
    """Turns the repository's definitions into a ResolvedGraph, or raises naming the bad node."""

    def __init__(
        self,
        definitions: list[NodeDefinition],
        resources: dict[str, BaseModel],
        default_handler: BaseIOHandler,
        default_handler_is_explicit: bool,
        named_retries: dict[str, RetryPolicy],
    ) -> None:
        definitions = list({id(d): d for d in definitions}.values())  # one object listed twice counts once (rivers)
        self.graphs = {d.name: d for d in definitions if isinstance(d, GraphAsset)}
        # a task used inside a graph may also be listed in tasks=; it then adds no standalone step
        in_graphs = {id(n.task) for g in self.graphs.values() for n in g.nodes if isinstance(n, GraphTaskNode)}
        self.definitions = [
            node for d in definitions if id(d) not in in_graphs
            for node in (d.nodes if isinstance(d, GraphAsset) else [d])
        ]
        self.resources = resources
        self.default_handler = default_handler
        self.default_handler_is_explicit = default_handler_is_explicit
        self.named_retries = named_retries

    def resolve(self) -> ResolvedGraph:
        producer = self._index_outputs()
        for graph in self.graphs.values():  # its tasks read only the first of these keys that is set
            for key in (NODE_EXECUTOR_METADATA, EXECUTOR_METADATA):
                value = graph.metadata.get(key)
                if value is not None and value not in EXECUTOR_KEYS:
                    raise ConfigurationError(f"Unknown executor in rivers/executor metadata: '{value}'")
        for key in self.resources:
            if key in producer:
                warnings.warn(f"Resource key '{key}' shadows an asset", stacklevel=4)
        nodes: dict[str, ResolvedNode] = {}
        for definition in self.definitions:
            node = self._resolve_node(definition, producer)
            nodes[node.name] = node
        for node in nodes.values():  # inputs load through the handler of the output they read
            for param in node.params:
                if param.kind in ("input", "item", "collect"):  # an AssetDef.input override wins
                    slot = nodes[producer[param.source]].outputs[param.source]  # type: ignore[index]
                    param.metadata = {**slot.metadata, **param.metadata}
                    if param.handler is not None:
                        continue
                    param.handler = slot.handler
                    slot.fan_out = slot.fan_out or param.kind == "item"
                    producer_def = nodes[producer[param.source]].definition  # type: ignore[index]
                    param.iterate = isinstance(producer_def, CollectNode) and producer_def.stream
        resolved = ResolvedGraph(nodes, producer, self.graphs)
        check_acyclic(resolved)
        return resolved

    def _index_outputs(self) -> dict[str, str]:
        producer: dict[str, str] = {}
        node_names: set[str] = set()
        for definition in self.definitions:
            kind = "task" if isinstance(definition, (Task, GraphTaskNode)) else "asset"
            if definition.name in node_names:
                raise DuplicateNameError(
                    f"duplicate {kind} name '{definition.name}': two definitions register under it")
            node_names.add(definition.name)
            for out in definition.output_names:
                if out in producer:
                    raise DuplicateNameError(f"duplicate asset name '{out}': two definitions register under it "
                                             f"('{producer[out]}' and '{definition.name}')")
                producer[out] = definition.name
        return producer

    def handler_for(self, spec: BaseIOHandler | str | type | None, owner: str) -> BaseIOHandler | None:
        """Resolve an `io_handler=` value (instance, class, or resource key) of `owner` ("Asset 'a'")."""
        if spec is None:
            return None
        if isinstance(spec, str):
            if spec not in self.resources:
                raise AssetDefinitionError(
                    f"{owner}: io_handler references resource '{spec}' which is not in resources"
                )
            value = self.resources[spec]
            if not isinstance(value, BaseIOHandler):
                raise AssetDefinitionError(
                    f"{owner}: io_handler references resource '{spec}' which does not implement the IOHandler "
                    f"protocol (handle_output + load_input): {type(value).__name__} is not a BaseIOHandler"
                )
            return value
        if isinstance(spec, type) and issubclass(spec, BaseIOHandler):
            return spec()
        if not isinstance(spec, BaseIOHandler):
            raise ConfigurationError(
                f"io_handler of {owner} must be a BaseIOHandler subclass instance, got {type(spec).__name__}"
            )
        return spec

    def _outputs(self, definition: NodeDefinition) -> dict[str, OutputSlot]:
        node_handler = self.handler_for(definition.io_handler, _label(definition, definition.name))
        outputs: dict[str, OutputSlot] = {}
        output_defs = definition.output_defs if isinstance(definition, MultiAsset) else [
            AssetDef(definition.name, None, definition.metadata)
        ]
        if isinstance(definition, (GraphTaskNode, GraphValueNode, CollectNode)) and definition.is_final:
            graph = definition.graph
            assert graph is not None
            graph_value = AssetDef(graph.name, graph.io_handler or None, graph.metadata)
            # a body that returns an upstream asset has a node of the graph's name that writes only that
            output_defs = [graph_value] if definition.name == graph.name else [*output_defs, graph_value]
        for out in output_defs:
            # a multi-asset's io_handler writes every output without its own; a graph's final task
            # writes only its own value with it (the graph's value has the graph's handler)
            handler = self.handler_for(out.io_handler, _label(definition, out.name)) or (
                node_handler if out.name == definition.name or isinstance(definition, MultiAsset) else None
            )
            metadata = {**definition.metadata, **out.metadata}
            explicit = handler is not None or self.default_handler_is_explicit
            outputs[out.name] = OutputSlot(out.name, handler or self.default_handler, metadata, explicit)
        return outputs

    def _retry(self, definition: NodeDefinition) -> RetryPolicy | None:
        graph = getattr(definition, "graph", None)
        if isinstance(graph, GraphAsset) and definition.retry == graph.retry:  # the graph's, inherited
            owner = f"referenced by asset '{graph.name}'"
        else:
            kind, _, quoted = _label(definition, definition.name).partition(" ")
            owner = f"referenced by {kind.lower()} {quoted}"
        return resolve_retry(definition.retry, self.named_retries, owner)

    def _resolve_node(self, definition: NodeDefinition, producer: dict[str, str]) -> ResolvedNode:
        name = definition.name
        executor_key = getattr(definition, "executor_key", None) or definition.metadata.get(EXECUTOR_METADATA)
        if executor_key is not None and executor_key not in EXECUTOR_KEYS:
            raise ConfigurationError(f"Unknown executor in rivers/executor metadata: '{executor_key}'")
        outputs = self._outputs(definition)
        node = ResolvedNode(
            name=name, definition=definition, params=[], outputs=outputs, needs=set(),
            context_type=None, config_type=None, return_hint=None, retry=self._retry(definition),
            executor_key=executor_key,
        )
        if definition.fn is None or isinstance(definition, ExternalAsset):
            return node
        overrides = {d.name: d for d in getattr(definition, "deps", []) if d.role == "input"}
        for dep in getattr(definition, "deps", []):
            if dep.name not in producer:
                raise GraphValidationError(f"unresolved input '{dep.name}' of '{name}': no such asset")
            node.needs.add(dep.name)
        for after in getattr(definition, "after", []):  # ordering-only: extra arguments, a graph's deps
            if after not in producer:
                raise GraphValidationError(f"unresolved input '{after}' of '{name}': no such asset")
            node.needs.add(after)
        if isinstance(definition, CollectNode):
            node.params.append(Param("values", "collect", definition.mapped))
            node.needs.add(definition.mapped)
            return node
        hints = type_hints_of(definition.fn)
        node.return_hint = hints.get("return", inspect.Signature.empty)
        signature = inspect.signature(definition.fn)
        for index, (pname, parameter) in enumerate(signature.parameters.items()):
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            hint = hints.get(pname)
            ctx = context_class(hint)
            if ctx is not None or pname == "context":
                if index != 0:
                    raise ExecutionError(f"Context must be the first parameter of '{name}'")
                is_task = isinstance(definition, (Task, GraphTaskNode))
                default_context = TaskExecutionContext if is_task else AssetExecutionContext
                node.context_type = ctx or default_context
                node.config_type = config_type_of(hint)
                node.params.append(Param(pname, "context", type_hint=hint))
                continue
            if pname == getattr(definition, "item_param", None):
                source = definition.fan_out_source  # type: ignore[attr-defined]
                if source not in producer:
                    raise GraphValidationError(f"unresolved input '{pname}' of '{name}': no asset named '{source}'")
                node.needs.add(source)
                node.params.append(Param(pname, "item", source, hint))
                continue
            wire = getattr(definition, "wiring", {}).get(pname)
            if wire is not None and wire.kind == "const":
                node.params.append(Param(pname, "const", type_hint=hint, value=wire.value))
                continue
            if wire is not None:
                if wire.source not in producer:  # named as rivers names it: the upstream the body uses
                    raise GraphValidationError(
                        f"unresolved input '{wire.source}' of '{name}' (its parameter '{pname}'): no asset "
                        f"named '{wire.source}'"
                    )
                node.needs.add(wire.source)
                node.params.append(Param(pname, "input", wire.source, hint))
                continue
            if parameter.default is not parameter.empty:
                continue
            node.params.append(self._bind(node, pname, hint, producer, overrides))
        return node

    def _bind(
        self, node: ResolvedNode, pname: str, hint: Any, producer: dict[str, str], overrides: dict[str, AssetDef]
    ) -> Param:
        if is_self_dependency(pname, hint):
            slot = node.outputs[node.name] if node.name in node.outputs else next(iter(node.outputs.values()))
            args = typing.get_args(hint)
            return Param(pname, "self", slot.name, args[0] if args else None, slot.handler, slot.metadata)
        if pname in producer:
            node.needs.add(pname)
            override = overrides.get(pname)
            owner = f"{_label(node.definition, node.name)} (input '{pname}')"
            handler = self.handler_for(override.io_handler, owner) if override else None
            metadata = dict(override.metadata) if override and override.metadata else {}
            return Param(pname, "input", pname, hint, handler, metadata)
        if pname in self.resources:
            return Param(pname, "resource", pname, hint)
        raise GraphValidationError(
            f"unresolved input '{pname}' of '{node.name}': {self._why_unresolved(node, pname, hint, producer)}"
        )

    def _why_unresolved(self, node: ResolvedNode, pname: str, hint: Any, producer: dict[str, str]) -> str:
        """What the user most likely meant: a definition left out of assets=[...], a resource under another
        key, an undecorated function, or a close name."""
        module = getattr(node.definition.fn, "__module__", None) or ""
        value = getattr(sys.modules.get(module), pname, None)
        if isinstance(value, NodeDefinition):
            kind, listing = ("task", "tasks") if isinstance(value, Task) else ("asset", "assets")
            return f"{kind} '{pname}' is defined in module {module} but not in the repository's {listing}=[...]"
        if inspect.isfunction(value):
            return f"'{pname}' in module {module} is a plain function, not an asset: decorate it with @rs.Asset"
        by_type = [key for key, res in self.resources.items() if isinstance(hint, type) and isinstance(res, hint)]
        if by_type:
            return (f"a {hint.__name__} resource is registered under the key '{by_type[0]}', and resources are "
                    f"injected by parameter name: name the parameter '{by_type[0]}' or register it as '{pname}'")
        close = difflib.get_close_matches(pname, [*producer, *self.resources], n=3)
        if close:
            return f"no asset, task or resource has that name; did you mean {' or '.join(map(repr, close))}?"
        return "no asset, task or resource has that name"


def resolve_retry(
    retry: RetryPolicy | str | None, named: dict[str, RetryPolicy], owner: str
) -> RetryPolicy | None:
    """The policy `retry` names; `owner` says where it was named ("referenced by asset 'a'", "in ...")."""
    if retry is None or isinstance(retry, RetryPolicy):
        return retry
    if retry not in named:  # rivers 0.6.2's wording, its list of names included
        registered = ", ".join(json.dumps(name, ensure_ascii=False) for name in named)
        raise ConfigurationError(f"unknown retry policy '{retry}' {owner}; registered: [{registered}]")
    return named[retry]


SELF_DEPENDENCY_HINT = "depends on itself; use SelfDependency[T] to reference an asset's own previous output"


def _label(definition: NodeDefinition, name: str) -> str:
    """How messages name a definition: `Task 't'` or `Asset 'a'` (an output of a multi-asset, a graph)."""
    is_task = isinstance(definition, Task) or (isinstance(definition, GraphTaskNode) and name == definition.name)
    return f"{'Task' if is_task else 'Asset'} '{name}'"


def asset_name_of(graph: ResolvedGraph, output: str) -> str:
    """The name users see for an output: a graph's internal outputs are the graph's."""
    owner = getattr(graph.node_of(output).definition, "graph", None)
    return owner.name if isinstance(owner, GraphAsset) else output


def asset_upstreams(graph: ResolvedGraph) -> dict[str, list[str]]:
    """Upstream assets of every asset, in the order its parameters name them (graphs collapsed to one)."""
    upstream: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        ordered = [p.source for p in node.params if p.kind in ("input", "item", "collect") and p.source]
        ordered += sorted(node.needs - set(ordered))
        for out in node.outputs:
            asset = asset_name_of(graph, out)
            edges = upstream.setdefault(asset, [])
            for need in ordered:
                up = asset_name_of(graph, need)
                if up == asset and need != asset:  # between two tasks of one graph: not an edge of the graph
                    continue
                if up not in edges:
                    edges.append(up)
    return upstream


def check_acyclic(graph: ResolvedGraph) -> None:
    """Raise GraphValidationError for an asset that depends on itself, or naming every cycle, as rivers does."""
    upstream = asset_upstreams(graph)
    for asset, edges in upstream.items():
        if asset in edges:
            raise GraphValidationError(f"Asset '{asset}': {SELF_DEPENDENCY_HINT}")
    cycles = [" -> ".join([*scc, scc[0]]) for scc in strong_components(upstream) if len(scc) > 1]
    if len(cycles) == 1:
        raise GraphValidationError(f"Cycle detected in asset graph: {cycles[0]}")
    if cycles:
        listed = "\n".join(f"  {number}. {cycle}" for number, cycle in enumerate(cycles, 1))
        raise GraphValidationError(f"{len(cycles)} cycles detected in asset graph:\n{listed}")


def strong_components(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components (Pearce's variant), roots in name order, each edge list walked last to first.

    A component lists its other members in the order they finished, then its root: the order rivers
    0.6 prints a cycle in.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    assigned: set[str] = set()
    finished: list[str] = []  # finished nodes not yet in a component
    components: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        work: list[tuple[str, Iterator[str]]] = [(root, reversed(edges[root]))]
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    work.append((child, reversed(edges.get(child, []))))
                elif child not in assigned:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] != index[current]:
                finished.append(current)
                continue
            start = len(finished)
            while start > 0 and index[finished[start - 1]] > index[current]:
                start -= 1
            component = [*finished[start:], current]
            del finished[start:]
            assigned.update(component)
            components.append(component)
    return components


def job_outputs(graph: ResolvedGraph, job: Any) -> set[str]:
    """The outputs a job runs: each listed definition's (a graph's internal ones too)."""
    outputs: set[str] = set()
    for name in job.node_names:
        named = graph.outputs_named(name)
        if named is None:
            raise NodeNotFoundError(f"Job '{job.name}': node '{name}' not found in repository")
        outputs |= named
    return outputs


def check_job(graph: ResolvedGraph, job: Any) -> None:
    """A job's upstreams are in it, or (`allow_incomplete_deps`) loadable through an explicit IO handler."""
    outputs = job_outputs(graph, job)
    for node in graph.nodes.values():
        if not set(node.outputs) & outputs:
            continue
        missing = [need for need in sorted(node.needs) if need not in outputs and graph.node_of(need).runnable]
        if missing and not job.allow_incomplete_deps:
            asset = asset_name_of(graph, next(out for out in node.outputs if out in outputs))
            raise GraphValidationError(
                f"Job '{job.name}': node '{asset}' depends on '{asset_name_of(graph, missing[0])}' which is not "
                f"in the job. Add it to the job or set allow_incomplete_deps=True"
            )
        for source in unloadable_inputs(graph, node, frozenset(outputs)):
            raise GraphValidationError(
                f"Job '{job.name}': node '{node.name}' depends on '{source}' which is not in the job and has no "
                f"io_handler"
            )


def unloadable_inputs(graph: ResolvedGraph, node: ResolvedNode, available: frozenset[str]) -> list[str]:
    """Inputs of `node` produced outside `available` that no explicit IO handler can load."""
    found: list[str] = []
    for param in node.params:
        if param.kind != "input" or param.source in available:
            continue
        assert param.source is not None
        slot = graph.node_of(param.source).outputs[param.source]
        if not slot.explicit_handler and not _has_input_override(node, param.source):
            found.append(param.source)
    return found


def _has_input_override(node: ResolvedNode, source: str) -> bool:
    deps = getattr(node.definition, "deps", [])
    return any(d.role == "input" and d.name == source and d.io_handler is not None for d in deps)
