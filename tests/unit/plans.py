"""Plans of steps that leave the coordinator's process (the parallel executor) and store nothing: what the
coordinator does with remote results is tested without processes, through fake queues."""

from __future__ import annotations

from typing import Any

import rivers as rs
from rivers.io.base import BaseIOHandler, InputContext, OutputContext
from rivers.plan import Plan, build_plan


class NullIOHandler(BaseIOHandler):
    """Stores nothing, loads None; not process-local, so its steps are not moved to the coordinator."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        return None

    def load_input(self, context: InputContext) -> Any:
        return None


def parallel_plan(assets: list[Any]) -> Plan:
    repo = rs.CodeRepository(assets, default_executor=rs.Executor.parallel(), default_io_handler=NullIOHandler())
    graph = repo._resolve()
    return build_plan(graph, set(graph.producer), rs.Executor.parallel(), True)
