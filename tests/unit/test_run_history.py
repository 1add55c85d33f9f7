"""What `rivers runs` / `rivers run` read from a run's events and record: step states, attempts, failure reasons."""

from __future__ import annotations

import json

from rivers.cli.runs import _duration, _steps
from rivers.distributed.history import Tally, failure_reason
from rivers.distributed.runs import normalise_target, unserved_message


def test_tally_follows_each_step_to_its_latest_state() -> None:
    tally = Tally()
    for entry in [
        {"event": "planned", "steps": [{"key": "a"}, {"key": "b"}, {"key": "c"}, {"key": "d"}]},
        {"event": "started", "step": "a", "time": 1.0},
        {"event": "attempt_failed", "step": "a", "attempt": 1, "reason": "infrastructure", "error": "WorkerLost: x"},
        {"event": "started", "step": "a", "time": 2.0},
        {"event": "succeeded", "step": "a", "attempt": 2, "duration_s": 0.5, "worker": "w1", "time": 3.0},
        {"event": "started", "step": "b", "time": 3.0},
        {"event": "failed", "step": "b", "attempt": 1, "reason": "out_of_memory", "error": "OOMKilled", "time": 4.0},
        {"event": "skipped", "step": "c", "time": 4.0},
    ]:
        tally.add(entry)
    assert tally.counts() == {"total": 4, "succeeded": 1, "failed": 1, "skipped": 1, "running": 0, "pending": 1}
    a, b = tally.steps["a"], tally.steps["b"]
    assert (a["status"], a["attempts"], a["worker"], a["duration_s"]) == ("succeeded", 2, "w1", 0.5)
    assert a["failures"] == [{"attempt": 1, "reason": "infrastructure", "error": "WorkerLost: x"}]
    assert (b["status"], b["reason"], b["error"]) == ("failed", "out_of_memory", "OOMKilled")
    assert tally.steps["d"]["status"] == "pending"


def test_failure_reason_prefers_the_runs_own_error_then_its_first_failed_asset() -> None:
    result = json.dumps({"success": False, "materialized_assets": [], "failed_assets": [["burnt", "ValueError: x"]]})
    assert failure_reason({b"result": result.encode()}) == "burnt: ValueError: x"
    assert failure_reason({b"error": b"no rivers-coordinator serves m:repo", b"result": result.encode()}) == (
        "no rivers-coordinator serves m:repo")
    assert failure_reason({b"status": b"succeeded"}) is None


def test_repository_names_are_normalised() -> None:
    assert normalise_target("shop") == "shop:repo"
    assert normalise_target(" shop:other ") == "shop:other"
    assert unserved_message("shop:repo") == (
        "no rivers-coordinator serves shop:repo; start one with rivers-coordinator --repo shop:repo")


def test_step_counts_and_durations_read_at_a_glance() -> None:
    counts = {"total": 5, "succeeded": 3, "failed": 1, "skipped": 1, "running": 0}
    assert _steps(counts) == "3/5 ok, 1 failed, 1 skipped"
    assert _steps({"total": 0}) == "0/0 ok"
    assert [_duration(s) for s in (None, 0.0042, 0.25, 12.34, 3725.0)] == ["-", "4.2 ms", "250 ms", "12.3 s",
                                                                         "01:02:05"]
