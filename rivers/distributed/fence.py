"""The fence of a rivers-worker's attempts: an output is written only while its attempt holds its lease.

A worker paused past its lease (SIGSTOP, a long GC, a frozen VM) has lost the step to a retry by the time it
runs again. Right before each output write, the pool process checks that the lease key of its job still
names its worker and has at least FENCE_MARGIN_MS to live; otherwise the write is refused and the attempt
ends (StaleAttempt). What remains is a pause longer than that margin that falls between the check and the
end of the write itself (see the README's security section).
"""

from __future__ import annotations

from typing import Any

from rivers import defaults
from rivers.exceptions import StaleAttempt
from rivers.executors.pool_process import FenceFactory
from rivers.queues import keys
from rivers.runtime import Fence


class LeaseFence(FenceFactory):
    """Made in the worker, pickled to its pool processes (initializer), called there once per attempt."""

    def __init__(self, url: str, worker: str) -> None:
        self.url = url
        self.worker = worker
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "worker": self.worker, "_client": None}

    def __call__(self, ticket: str, step_key: str) -> Fence:
        lease = keys.lease_key(ticket)

        def check(output: str) -> None:
            if self._client is None:
                from rivers.distributed.connection import connect

                self._client = connect(self.url)
            pipe = self._client.pipeline(transaction=False)
            pipe.get(lease)
            pipe.pttl(lease)
            holder, ttl = pipe.execute()
            if holder is None or holder.decode() != self.worker or ttl < defaults.FENCE_MARGIN_MS:
                raise StaleAttempt(
                    f"'{step_key}' lost its lease (worker {self.worker} was paused or cut off from Redis past "
                    f"{defaults.LEASE_MS / 1000:g} s), so output '{output}' was not written; the step was retried"
                )

        return check
