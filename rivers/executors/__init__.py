"""Executors consume step queues; this module picks the queue for each executor key of a plan."""

from __future__ import annotations

from rivers.definitions.executors import Executor, Parallel
from rivers.exceptions import ConfigurationError
from rivers.plan import Plan
from rivers.queues.base import StepQueue, StepRequest
from rivers.results import StepResult
from rivers.runtime import StepCall

NO_REDIS_FOR_KUBERNETES = (
    "Kubernetes steps travel through Redis: set RIVERS_REDIS_URL (and run `rivers-worker --executor kubernetes`) "
    "to run '{step}' on Kubernetes"
)


class UnavailableQueue:
    """The queue of an executor this run cannot reach: each step put on it fails at once, saying why."""

    def __init__(self, executor: str, message: str) -> None:
        self.executor = executor
        self.message = message  # formatted with {step}

    def put(self, request: StepRequest) -> None:
        call = request.call
        request.report(StepResult.failed(call.run_id, call.step_key, call.attempt, [s.name for s in call.outputs],
                                         ConfigurationError(self.message.format(step=call.step_key))))

    def prepare(self, call: StepCall) -> None:
        """Nothing is ever built."""

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return False

    def disarm(self, call: StepCall) -> None:
        """Nothing is ever armed."""

    def flush(self) -> None:
        """Nothing is ever held."""

    def cancel_run(self, run_id: str) -> None:
        """Nothing is ever held."""


def queues_for(plan: Plan, executor: Executor) -> dict[str, StepQueue]:
    """The queue of every executor key the plan uses, apart from in_process (run by the coordinator).

    With RIVERS_REDIS_URL set, `parallel` steps go to rivers-workers through Redis; the ones that must
    stay in this process (process-local values) still go to the embedded parallel queue. `kubernetes`
    steps always go through Redis (to the pod launcher); without it they fail at once, saying so.
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
        elif key == "kubernetes":
            if url is None:
                queues[key] = UnavailableQueue(key, NO_REDIS_FOR_KUBERNETES)
            else:
                from rivers.queues.redis import redis_queue

                queues[key] = redis_queue(url, key)
        else:
            raise ConfigurationError(f"The '{key}' executor is not available in this version of rivers")
    return queues


def executor_limits(executor: Executor) -> dict[str, int]:
    """Executor key -> the most steps of a run queued or running on it at once (enforced by RunState)."""
    limit = getattr(executor, "max_concurrent_steps", None)
    return {executor.key: limit} if limit is not None else {}
