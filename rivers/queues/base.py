"""The queue contract between the coordinator and the executors that consume steps.

The coordinator puts a `StepRequest` on the queue of the step's executor and learns the
outcome from `request.report(result)`, called from any thread. An in-memory queue hands the
request to a consumer in this process; a Redis queue sends the request's JSON spec to remote
workers and reports what they send back. The coordinator cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rivers.plan import Step
from rivers.results import StepResult
from rivers.runtime import StepCall

Report = Callable[[StepResult], None]


def _not_told() -> None:
    """A consumer that cannot tell when a step starts running says nothing."""


@dataclass(slots=True)
class StepRequest:
    """One attempt of one step, handed to an executor."""

    step: Step
    call: StepCall  # the live objects; a consumer that leaves the process builds a StepSpec from it
    report: Report
    running: Callable[[], None] = _not_told  # a process started the step (it was only queued until then)

    @property
    def live(self) -> bool:
        """The step must run in the coordinator's process, on these very objects."""
        return self.step.live


class StepQueue(Protocol):
    """Consumed by one executor. `put` never blocks on the step itself.

    A queue may hold what was put until `flush`, which the coordinator calls before it waits or runs a
    step itself: batching without a thread of its own. `prepare` is optional work ahead (a no-op here).
    """

    executor: str

    def put(self, request: StepRequest) -> None: ...

    def prepare(self, call: StepCall) -> None:
        """Do ahead, while the coordinator would only wait, what `put` will do for this attempt (build its spec)."""

    def arm(self, call: StepCall, upstream: tuple[str, int]) -> bool:
        """Store this attempt where the successful report of `upstream` (step key, attempt) sends it on by itself;
        True if it did (then `put` confirms it, or `disarm` takes it back). Only a Redis queue can."""

    def disarm(self, call: StepCall) -> None:
        """An armed attempt that will not be put: take it back."""

    def flush(self) -> None: ...

    def cancel_run(self, run_id: str) -> None: ...
