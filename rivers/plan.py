"""Planning: a selection of the resolved graph becomes steps with upstreams, level and executor."""

from __future__ import annotations

from dataclasses import dataclass

from rivers.definitions.executors import Executor
from rivers.definitions.graph import EXECUTOR_METADATA, NODE_EXECUTOR_METADATA, CollectNode, GraphAsset
from rivers.definitions.policies import RetryPolicy
from rivers.exceptions import GraphValidationError
from rivers.resolve import ResolvedGraph, ResolvedNode, unloadable_inputs


@dataclass(slots=True)
class Step:
    """One unit of execution: a node (with the outputs selected) and where it runs."""

    key: str
    node: ResolvedNode
    outputs: tuple[str, ...]  # selected outputs, in declaration order
    needs: frozenset[str]  # upstream outputs produced by steps of this plan
    upstream_steps: frozenset[str]
    level: int
    executor: str  # the queue it goes to: "in_process" | "parallel" | "kubernetes"
    requested_executor: str  # what the user asked for, before process-local values moved it
    live: bool  # needs the coordinator's process (a process-local IO handler)
    retry: RetryPolicy | None = None  # resolved: the node's own policy, else the run's
    instance_of: str | None = None  # a fan-out instance: the key of its mapped step
    index: int = 0  # a fan-out instance: the position of its item in the source

    @property
    def fan_out_source(self) -> str | None:
        """For a mapped task: the output whose items it runs over (the step expands, it never runs)."""
        return getattr(self.node.definition, "fan_out_source", None) if self.instance_of is None else None

    @property
    def is_async(self) -> bool:
        return self.node.definition.is_async


@dataclass
class Plan:
    steps: dict[str, Step]  # in topological order
    consumers: dict[str, list[str]]  # output name -> step keys that need it
    moved: list[str]  # steps moved to the coordinator although another executor was asked for

    def output_names(self) -> list[str]:
        return [out for step in self.steps.values() for out in step.outputs]


def build_plan(
    graph: ResolvedGraph,
    selected_outputs: set[str],
    executor: Executor,
    executor_explicit: bool,
    retry: RetryPolicy | None = None,
) -> Plan:
    """Steps for the selected outputs of runnable nodes (selection already expanded and validated).

    `retry` is the run's policy (job or materialize); a node's own policy wins.
    """
    graph = fuse_graphs(graph, executor, selected_outputs)
    wanted: dict[str, list[str]] = {}
    for name, node in graph.nodes.items():
        if node.runnable:
            outs = [out for out in node.outputs if out in selected_outputs]
            if outs:
                wanted[name] = outs
    steps: dict[str, Step] = {}
    consumers: dict[str, list[str]] = {}
    moved: list[str] = []
    for name in topological_order(graph, set(wanted)):
        node = graph.nodes[name]
        needs = frozenset(out for out in node.needs if out in selected_outputs and graph.producer[out] in wanted)
        for member in node.members or [node]:
            check_loadable(graph, member, needs | frozenset(node.outputs))
        upstream = frozenset(graph.producer[out] for out in needs)
        level = 1 + max((steps[up].level for up in upstream), default=-1)
        requested = node.executor_key or executor.key
        live = touches_process_local(node, wanted[name])
        runs_on = "in_process" if live and not node.definition.is_async else requested
        if live and requested != "in_process" and (executor_explicit or node.executor_key):
            moved.append(name)
        steps[name] = Step(name, node, tuple(wanted[name]), needs, upstream, level, runs_on, requested, live,
                           node.retry or retry)
        for out in needs:
            consumers.setdefault(out, []).append(name)
    return Plan(steps, consumers, moved)


def fuse_graphs(graph: ResolvedGraph, executor: Executor, selected: set[str]) -> ResolvedGraph:
    """Graphs that run elsewhere with in-process internals become one step each (API.md §1).

    Such a step runs all its internal tasks one after another in the same worker: the values
    between them never come back to the coordinator.
    """
    groups: dict[str, list[ResolvedNode]] = {}
    for name, asset in graph.graphs.items():
        own = asset.metadata.get(EXECUTOR_METADATA) or executor.key
        if asset.metadata.get(NODE_EXECUTOR_METADATA) != "in_process" or own == "in_process":
            continue
        members = [graph.nodes[n.name] for n in asset.nodes if set(graph.nodes[n.name].outputs) & selected]
        if any(m.executor_key != "in_process" for m in members):
            continue  # a task that asks for another executor itself: every task is a step of its own
        if members and not any(isinstance(m.definition, CollectNode) or m.definition.fan_out_source  # type: ignore[attr-defined]
                               for m in members):
            groups[name] = members
    if not groups:
        return graph
    owner = {m.name: name for name, members in groups.items() for m in members}
    nodes: dict[str, ResolvedNode] = {}
    producer = dict(graph.producer)
    for name, node in graph.nodes.items():
        if name not in owner:
            nodes[name] = node
        elif owner[name] not in nodes:
            nodes[owner[name]] = _fused_node(graph.graphs[owner[name]], groups[owner[name]])
    for name, members in groups.items():
        for member in members:
            for out in member.outputs:
                producer[out] = name
    return ResolvedGraph(nodes, producer, graph.graphs)


def _fused_node(asset: GraphAsset, members: list[ResolvedNode]) -> ResolvedNode:
    outputs = {out: slot for m in members for out, slot in m.outputs.items()}
    needs = {need for m in members for need in m.needs} - set(outputs)
    return ResolvedNode(
        name=asset.name, definition=asset, params=[], outputs=outputs, needs=needs, context_type=None,
        config_type=None, return_hint=None, retry=members[-1].retry,
        executor_key=asset.metadata.get(EXECUTOR_METADATA), members=members,
    )


def topological_order(graph: ResolvedGraph, names: set[str]) -> list[str]:
    """Kahn's algorithm over the given nodes, stable in definition order."""
    indegree = {name: 0 for name in names}
    down: dict[str, list[str]] = {name: [] for name in names}
    for name in names:
        for up in {graph.producer[out] for out in graph.nodes[name].needs}:
            if up in names and up != name:
                indegree[name] += 1
                down[up].append(name)
    order_index = {name: i for i, name in enumerate(graph.nodes)}
    ready = sorted((n for n, d in indegree.items() if d == 0), key=order_index.__getitem__)
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for child in sorted(down[current], key=order_index.__getitem__):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return order


def check_loadable(graph: ResolvedGraph, node: ResolvedNode, needs: frozenset[str]) -> None:
    """Inputs produced outside the plan are loaded through an explicit IO handler, or the plan is refused."""
    for source in unloadable_inputs(graph, node, needs):
        raise GraphValidationError(
            f"Job '<materialize>': node '{node.name}' depends on '{source}' which is not in the job and has no "
            f"io_handler; include '{source}' in the run or give it an io_handler"
        )


def touches_process_local(node: ResolvedNode, outputs: list[str]) -> bool:
    """Whether the step reads or writes a value that lives only in this process.

    A fused graph keeps the values passed between its internal tasks inside its worker, so only
    its inputs from outside and the graph's own output count.
    """
    if node.members:
        graph_output = node.definition.name
        inside = set(node.outputs)
        params = [p for m in node.members for p in m.params if p.source not in inside]
        written = [graph_output] if graph_output in outputs else []
    else:
        params, written = node.params, outputs
    if any(node.outputs[out].handler.is_process_local() for out in written):
        return True
    return any(p.handler is not None and p.handler.is_process_local() for p in params)
