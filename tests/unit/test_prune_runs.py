"""Local run logs (.rivers/runs/<run id>/logs.jsonl) are kept as long as runs are kept in Redis, then pruned."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rivers import defaults, logs
from rivers.cli.logs import use_runs_dir

DAY = 86400.0


def make_run(base: Path, run_id: str, age_s: float, with_log: bool = True) -> Path:
    run = base / run_id
    run.mkdir(parents=True)
    target = run / logs.LOG_FILE if with_log else run
    if with_log:
        target.write_text('{"kind": "run"}\n')
    moment = time.time() - age_s
    os.utime(target, (moment, moment))
    return run


def test_runs_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    old = make_run(tmp_path, "old", 8 * DAY)
    empty_old = make_run(tmp_path, "empty-old", 8 * DAY, with_log=False)
    recent = make_run(tmp_path, "recent", 6 * DAY)
    (tmp_path / "stray.txt").write_text("not a run")
    os.utime(tmp_path / "stray.txt", (0, 0))
    assert sorted(logs.prune_runs(str(tmp_path), 7 * DAY)) == ["empty-old", "old"]
    assert not old.exists() and not empty_old.exists()
    assert recent.exists() and (tmp_path / "stray.txt").exists()  # a run still within the window; not a run
    assert logs.prune_runs(str(tmp_path / "missing"), DAY) == []


def test_a_run_whose_log_is_still_written_is_kept(tmp_path: Path) -> None:
    run = make_run(tmp_path, "long", 30 * DAY)
    logs.append_record(str(run / logs.LOG_FILE), {"kind": "log"})  # a run started long ago that still logs
    assert logs.prune_runs(str(tmp_path), 7 * DAY) == [] and run.exists()


def test_materialize_prunes_with_the_runs_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.RUNS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(defaults, "RUN_RETENTION_S", 2 * DAY)
    make_run(tmp_path, "three-days", 3 * DAY)
    make_run(tmp_path, "one-day", 1 * DAY)
    assert use_runs_dir() == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-day"]
