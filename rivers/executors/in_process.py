"""The in_process executor: steps in the coordinator's own process, on the user's live objects.

    put(request) ─┬─ sync  ─> FIFO ─> run_next(): the coordinator's thread runs them one at a time
                  └─ async ─> one event loop (a thread of this process): the run's async steps run
                              concurrently as asyncio tasks, as rivers does
    each reports its StepResult like any other executor's step

The coordinator calls `run_next` whenever it would otherwise wait, so a sync step never runs while
the coordinator should be dispatching.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from rivers.executors.parallel import AsyncRunner
from rivers.queues.base import StepRequest
from rivers.runtime import StepCall, run_step


class InProcessQueue:
    """The `in_process` StepQueue of one run."""

    executor = "in_process"

    def __init__(self, on_start: Callable[[StepRequest], None]) -> None:
        self.on_start = on_start  # a sync step is about to run (its "started" event)
        self.waiting: deque[StepRequest] = deque()
        self.async_steps = AsyncRunner(None)

    def put(self, request: StepRequest) -> None:
        if request.step.is_async:
            self.on_start(request)
            self.async_steps.submit(request)
        else:
            self.waiting.append(request)

    def prepare(self, call: StepCall) -> None:
        """Nothing to build: the step runs on the live objects."""

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        return False  # the coordinator's own thread starts it

    def disarm(self, call: StepCall) -> None:
        """Nothing is ever armed."""

    def flush(self) -> None:
        """Nothing to send: sync steps wait for `run_next`, async ones started at `put`."""

    def run_next(self) -> bool:
        """Run the oldest waiting sync step here and report it; False when none waits."""
        if not self.waiting:
            return False
        request = self.waiting.popleft()
        self.on_start(request)
        request.report(run_step(request.call))
        return True

    def cancel_run(self, run_id: str) -> None:
        self.waiting = deque(r for r in self.waiting if r.call.run_id != run_id)
        self.async_steps.cancel_run(run_id)

    def shutdown(self) -> None:
        self.async_steps.shutdown()
