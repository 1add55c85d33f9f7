"""Graph assets: a body that wires tasks into a sub-graph at decoration time (API.md §2).

The body runs once, when decorated, with placeholders: each `Task` call records an internal node
`<graph>/<task>` and returns a `NodeOutput` placeholder that later calls take as arguments. The
recorded nodes are ordinary node definitions for the resolver (with explicit wiring of their
parameters), so each becomes a step of the plan like any other. The node the body returns (or,
when it returns nothing, the last task it called) also writes the graph asset's own output.

Calling an upstream *asset* in the body declares a dependency on it, like an annotated parameter;
extra positional arguments that are other tasks' outputs become ordering-only dependencies.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rivers.definitions.assets import Asset, DepDef, check_deps
from rivers.definitions.nodes import NodeDefinition, reject_reserved
from rivers.definitions.policies import Compute, Hook, RetryPolicy
from rivers.definitions.resources import check_io_handler_argument
from rivers.exceptions import AssetDefinitionError
from rivers.io.base import BaseIOHandler

_RECORDER: contextvars.ContextVar[GraphRecorder | None] = contextvars.ContextVar("rivers_graph", default=None)

NODE_EXECUTOR_METADATA = "rivers/node/executor"
EXECUTOR_METADATA = "rivers/executor"


def recording_graph() -> GraphRecorder | None:
    """The graph body being recorded in this context, if any."""
    return _RECORDER.get()


@dataclass(frozen=True)
class Wire:
    """Where a wired task parameter gets its value: an upstream output, or a constant."""

    kind: str  # "output" | "const"
    source: str | None = None
    value: Any = None


class UpstreamInput:
    """A graph body parameter: the value of the upstream asset of that name."""

    def __init__(self, recorder: GraphRecorder, name: str) -> None:
        self._recorder = recorder
        self.name = name
        self.node_name = name

    def map(self, task: Any, *, max_concurrency: int | None = None) -> MappedOutput:
        """Run `task` once per item of this upstream asset's value."""
        return self._recorder.record_map(self.name, task, max_concurrency)

    def __repr__(self) -> str:
        return f"UpstreamInput({self.name!r})"


class NodeOutput:
    """The future value of a recorded task call."""

    def __init__(self, recorder: GraphRecorder, node_name: str) -> None:
        self._recorder = recorder
        self.node_name = node_name

    def map(self, task: Any, *, max_concurrency: int | None = None) -> MappedOutput:
        """Run `task` once per item of this output (a list, or DynamicOutput items)."""
        return self._recorder.record_map(self.node_name, task, max_concurrency)

    def __repr__(self) -> str:
        return f"NodeOutput({self.node_name!r})"


class MappedOutput:
    """The instances of a mapped task; collect them before passing them on."""

    def __init__(self, recorder: GraphRecorder, node_name: str) -> None:
        self._recorder = recorder
        self.node_name = node_name

    def collect(self) -> NodeOutput:
        """All instance values as a list, in source order."""
        return self._recorder.record_collect(self.node_name, stream=False, ordered=True)

    def collect_stream(self, *, ordered: bool = False) -> NodeOutput:
        """All instance values as an iterator: completion order, or source order with `ordered=True`."""
        return self._recorder.record_collect(self.node_name, stream=True, ordered=ordered)

    def __repr__(self) -> str:
        return f"MappedOutput({self.node_name!r})"


class GraphTaskNode(NodeDefinition):
    """A task inside a graph asset: a step named `<graph>/<task>` with wired parameters."""

    kind = "graph_task"

    def __init__(self, graph_name: str, task: Any, name: str, wiring: dict[str, Wire]) -> None:
        self._init_node(task.fn, name, task.tags, task.io_handler, None, task.retry, task.hooks)
        self.task = task
        self.graph_name = graph_name
        self.wiring = wiring
        self.after: list[str] = []  # ordering-only upstream outputs (extra arguments, the graph's deps)
        self.graph: GraphAsset | None = None  # set when the body has been recorded
        self.is_final = False
        self.fan_out_source: str | None = None  # a mapped task: the output whose items it runs over
        self.item_param: str | None = None
        self.max_concurrency: int | None = None

    @property
    def executor_key(self) -> str | None:
        """API.md §1: the task's own rivers/node/executor, its own rivers/executor, then the graph's two."""
        own = getattr(self.task, "metadata", None) or {}
        graph = self.graph.metadata if self.graph is not None else {}
        return (own.get(NODE_EXECUTOR_METADATA) or own.get(EXECUTOR_METADATA) or graph.get(NODE_EXECUTOR_METADATA)
                or graph.get(EXECUTOR_METADATA))

    @property
    def output_names(self) -> list[str]:
        return [self.name, self.graph_name] if self.is_final else [self.name]


class GraphRecorder:
    """Collects the task calls of one graph body."""

    def __init__(self, graph_name: str) -> None:
        self.graph_name = graph_name
        self.nodes: dict[str, GraphTaskNode] = {}
        self.called_assets: dict[str, None] = {}  # upstream assets called in the body, in call order

    def _unique(self, base: str) -> str:
        name, count = base, 2
        while name in self.nodes:
            name, count = f"{base}_{count}", count + 1
        return name

    def record(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NodeOutput:
        name = self._unique(f"{self.graph_name}/{task.name}")
        wiring, after = self._wiring(task, name, args, kwargs)
        node = GraphTaskNode(self.graph_name, task, name, wiring)
        node.after = after
        self.nodes[name] = node
        return NodeOutput(self, name)

    def record_asset_call(self, asset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> UpstreamInput:
        """`numbers()` in a body: the value of the upstream asset `numbers`, like a parameter of that name."""
        if args or kwargs:
            raise TypeError(
                f"Asset '{asset.name}' called in the body of graph '{self.graph_name}' takes no arguments: "
                f"its inputs come from its own parameters"
            )
        if asset.name == self.graph_name:
            raise AssetDefinitionError(
                f"Asset '{self.graph_name}': depends on itself; use SelfDependency[T] to reference an asset's "
                f"own previous output"
            )
        self.called_assets.setdefault(asset.name, None)
        return UpstreamInput(self, asset.name)

    def record_map(self, source: str, task: Any, max_concurrency: int | None) -> MappedOutput:
        from rivers.definitions.tasks import Task

        if not isinstance(task, Task):
            raise TypeError(f"map() takes a Task, got {type(task).__name__}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        name = self._unique(f"{self.graph_name}/{task.name}")
        assert task.fn is not None
        params = _wirable_params(task.fn)
        if not params:
            raise TypeError(f"Task '{task.name}' takes no parameter to receive the mapped items")
        node = GraphTaskNode(self.graph_name, task, name, {})
        node.fan_out_source, node.item_param, node.max_concurrency = source, params[0].name, max_concurrency
        self.nodes[name] = node
        return MappedOutput(self, name)

    def record_collect(self, mapped: str, *, stream: bool, ordered: bool) -> NodeOutput:
        name = f"{mapped}__collect"
        if name in self.nodes:
            raise TypeError(f"The mapped output '{mapped}' is collected twice")
        node = CollectNode(self.graph_name, name, mapped, self.nodes[mapped], stream=stream, ordered=ordered)
        self.nodes[name] = node  # type: ignore[assignment]
        return NodeOutput(self, name)

    def _wiring(
        self, task: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Wire], list[str]]:
        """Parameter wiring, and the ordering-only upstreams: extra arguments that are outputs."""
        params = _wirable_params(task.fn)
        bound = {p.name: value for p, value in zip(params, args, strict=False)}
        extras = list(args[len(params):])
        for key, value in kwargs.items():
            if key not in {p.name for p in params}:
                if not _is_output(value):
                    raise TypeError(f"'{name}' got an unexpected keyword argument '{key}'")
                extras.append(value)
                continue
            if key in bound:
                raise TypeError(f"'{name}' got multiple values for argument '{key}'")
            bound[key] = value
        after: list[str] = []
        for value in extras:
            if not _is_output(value):
                raise TypeError(
                    f"'{name}' takes {len(params)} positional arguments but {len(args)} were given; extra "
                    f"arguments must be other tasks' outputs (ordering-only dependencies), got {type(value).__name__}"
                )
            self._wire(name, "*args", value)  # an uncollected mapped output is refused here too
            after.append(value.node_name)
        return {param: self._wire(name, param, value) for param, value in bound.items()}, after

    def _wire(self, name: str, param: str, value: Any) -> Wire:
        if isinstance(value, NodeOutput):
            return Wire("output", value.node_name)
        if isinstance(value, UpstreamInput):
            return Wire("output", value.name)
        if isinstance(value, MappedOutput):
            raise TypeError(f"The mapped output passed to '{name}' ({param}) must be collected with .collect()")
        return Wire("const", value=value)


def _is_output(value: Any) -> bool:
    return isinstance(value, (NodeOutput, UpstreamInput, MappedOutput))


def _collect(values: list[Any]) -> list[Any]:
    return list(values)


def _graph_value(value: Any) -> Any:
    return value


class GraphValueNode(NodeDefinition):
    """A body that returns an upstream asset: a step named after the graph that writes that value as its own.

    It waits for every other task of the body, so the graph's value appears when the whole graph is done.
    """

    kind = "graph_task"

    def __init__(self, graph: GraphAsset, source: str, after: list[str]) -> None:
        self._init_node(_graph_value, graph.name, graph.tags, None, None, graph.retry, None)
        self.graph_asset = graph
        self.graph: GraphAsset | None = graph
        self.wiring = {"value": Wire("output", source)}
        self.after = after
        self.is_final = True
        self.fan_out_source: str | None = None

    executor_key = GraphTaskNode.executor_key

    @property
    def output_names(self) -> list[str]:
        return [self.name]


class CollectNode(NodeDefinition):
    """`<graph>/<task>__collect`: the values of every instance of a mapped task, as one list."""

    kind = "collect"

    def __init__(
        self, graph_name: str, name: str, mapped: str, mapped_node: GraphTaskNode, *, stream: bool, ordered: bool
    ) -> None:
        self._init_node(_collect, name, mapped_node.tags, None, None, None, None)
        self.graph_name = graph_name
        self.mapped = mapped
        self.mapped_node = mapped_node
        self.stream = stream
        self.ordered = ordered
        self.wiring: dict[str, Wire] = {}
        self.graph: GraphAsset | None = None
        self.is_final = False

    executor_key = GraphTaskNode.executor_key
    output_names = GraphTaskNode.output_names


def _wirable_params(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters a graph body may wire: all but *args/**kwargs and a leading context."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params and _is_context_param(fn, params[0]):
        params = params[1:]
    return params


def _is_context_param(fn: Callable[..., Any], param: inspect.Parameter) -> bool:
    from rivers.resolve import context_class, type_hints_of

    return param.name == "context" or context_class(type_hints_of(fn).get(param.name)) is not None


class GraphAsset(Asset):
    """A graph of tasks whose returned task's value (or its last task's) is this asset's value."""

    kind = "graph"

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        name: str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        node_io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        deps: list[DepDef] | None = None,
        hooks: list[Hook] | None = None,
        retry: RetryPolicy | str | None = None,
        compute: Compute | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Asset.from_graph", reserved)
        check_io_handler_argument(io_handler)
        check_io_handler_argument(node_io_handler)
        graph_deps = _graph_deps(deps)
        self._init_asset(
            fn, name=name, tags=tags, kinds=kinds, group=group, code_version=code_version, io_handler=io_handler,
            metadata=metadata, deps=None, hooks=hooks, retry=retry, compute=compute,
        )
        self.deps = graph_deps
        self.node_io_handler = node_io_handler
        self.called_assets: list[str] = []
        self.nodes = self._record(fn)

    def _record(self, fn: Callable[..., Any]) -> list[GraphTaskNode]:
        recorder = GraphRecorder(self.name)
        placeholders = {p: UpstreamInput(recorder, p) for p in inspect.signature(fn).parameters}
        token = _RECORDER.set(recorder)
        try:
            returned = fn(**placeholders)
        finally:
            _RECORDER.reset(token)
        self.called_assets = list(recorder.called_assets)
        nodes: list[Any] = list(recorder.nodes.values())
        final = self._final_node(recorder, returned)
        if final is not None:
            final.is_final = True
        else:  # the body returned an upstream asset: a node of its own writes it
            assert isinstance(returned, UpstreamInput)
            waits = [n.name for n in nodes if getattr(n, "fan_out_source", None) is None]
            nodes.append(GraphValueNode(self, returned.name, waits))
        ordering = [dep.name for dep in self.deps]
        for node in nodes:
            node.graph = self
            if isinstance(node, CollectNode):
                node.io_handler = node.mapped_node.io_handler or self.node_io_handler
            elif node.io_handler is None and not isinstance(node, GraphValueNode):
                node.io_handler = self.node_io_handler
            if node.retry is None:
                node.retry = self.retry
            if ordering and not isinstance(node, CollectNode):
                node.after = [*node.after, *ordering]
        return nodes

    def _final_node(self, recorder: GraphRecorder, returned: Any) -> GraphTaskNode | None:
        """The node whose value is the graph's: the returned task, or the last task called."""
        if isinstance(returned, NodeOutput):
            return recorder.nodes[returned.node_name]
        if isinstance(returned, UpstreamInput):
            return None
        if isinstance(returned, MappedOutput):
            raise TypeError(
                f"Graph asset '{self.name}' returns the mapped output '{returned.node_name}'; it must be collected "
                f"with .collect() first"
            )
        if returned is not None and returned is not Ellipsis:
            raise AssetDefinitionError(
                f"Graph asset '{self.name}' must return the output of a Task call, an upstream asset, nothing "
                f"or ..., got {type(returned).__name__}"
            )
        if not recorder.nodes:
            raise AssetDefinitionError(
                f"Graph asset '{self.name}' calls no task: its body must call at least one Task, or return an "
                f"upstream asset"
            )
        last = list(recorder.nodes.values())[-1]
        if getattr(last, "fan_out_source", None) is not None:
            raise TypeError(
                f"The last task of graph asset '{self.name}' is the mapped '{last.name}'; it must be collected "
                f"with .collect() to become the graph's value"
            )
        return last

    @property
    def graph(self) -> GraphAsset:
        """Itself: a fused graph step's definition is the graph asset."""
        return self

    @property
    def upstream_names(self) -> list[str]:
        """Annotated parameters of the body and the upstream assets it calls."""
        params = list(inspect.signature(self.fn).parameters) if self.fn else []  # type: ignore[arg-type]
        return [*params, *(name for name in self.called_assets if name not in params)]

    @property
    def output_names(self) -> list[str]:
        return [self.name]


def _graph_deps(deps: Any) -> list[DepDef]:
    """`Asset.from_graph(deps=[AssetDef.dep(...), ...])`: edges of every internal task (None: none)."""
    return [] if deps is None else check_deps(deps)
