"""A step on a Redis worker is `queued` until a step process starts it, then `running` (the live display's counts).

The worker tells Redis at its next heartbeat that a step process got the job; the coordinator's watcher sees it
and the run's listeners get a "running" event between "started" (handed to the queue) and the outcome.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rivers.run import listening
from tests.conftest import Background, WorkerProcesses
from tests.pipelines import distributed_pipeline as dp
from tests.redis_server import wait_for

pytestmark = pytest.mark.slow


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: str, step: Any, result: Any) -> None:
        with self.lock:
            self.seen.append((event, step.key))

    def of(self, key: str) -> list[str]:
        with self.lock:
            return [event for event, step in self.seen if step == key and event != "planned"]


@pytest.mark.usefixtures("fast_watch")
def test_a_step_is_running_only_once_a_step_process_has_it(redis_url: str, workers: WorkerProcesses,
                                                           tmp_path: Path) -> None:
    workers.start(redis_url, concurrency=1)
    repo = dp.make_repo([dp.source, dp.gated, dp.after_gated], tmp_path)
    events = Events()
    with listening(events):
        run = Background(repo)
        wait_for(lambda: "running" in events.of("gated"), 30, message="the gated step to be running")
        assert events.of("gated") == ["started", "running"]  # it was queued, then running: not yet done
        (tmp_path / "scratch" / "open").touch()
        result = run.wait(60)
    assert result.success
    assert events.of("gated") == ["started", "running", "succeeded"]
    assert events.of("after_gated")[0] == "started" and events.of("after_gated")[-1] == "succeeded"
