"""Executors consume step queues; this module picks the queue for each executor key of a plan."""

from __future__ import annotations

from rivers.definitions.executors import Executor, Parallel
from rivers.exceptions import ConfigurationError
from rivers.plan import Plan
from rivers.queues.base import StepQueue


def queues_for(plan: Plan, executor: Executor) -> dict[str, StepQueue]:
    """The queue of every executor key the plan uses, apart from in_process (run by the coordinator).

    With RIVERS_REDIS_URL set, `parallel` steps go to rivers-workers through Redis; the ones that must
    stay in this process (process-local values) still go to the embedded parallel queue.
    """
    from rivers.distributed.connection import redis_url

    url = redis_url()
    queues: dict[str, StepQueue] = {}
    for key in {step.executor for step in plan.steps.values()} - {"in_process"}:
        if key == "parallel":
            from rivers.executors.parallel import parallel_queue

            local = parallel_queue(executor if isinstance(executor, Parallel) else Executor.parallel())
            if url is None:
                queues[key] = local
            else:
                from rivers.queues.redis import redis_queue

                queues[key] = redis_queue(url, key, local)
        else:
            raise ConfigurationError(f"The '{key}' executor is not available in this version of rivers")
    return queues
