"""Step log capture in this process: context.log and stdout/stderr of sync and async steps, the run's log file,
and what the live display makes of it (queued, then running)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import rivers as rs
from rivers import logs, runtime
from rivers.cli.progress import RunProgress


@rs.Asset
def talker(context: rs.AssetExecutionContext) -> int:
    print("to stdout", end="")
    print(" and the rest")
    print("to stderr", file=sys.stderr)
    context.log.info("an info record")
    context.log.debug("a debug record")
    return 1


@rs.Asset
async def async_talker(context: rs.AssetExecutionContext) -> int:
    print("async stdout")
    context.log.warning("async warning")
    return 2


@rs.Asset
def unfinished_line() -> int:
    print("no newline at the end", end="")
    raise ValueError("stopped")


def in_process(*assets: rs.AssetDef) -> rs.CodeRepository:
    return rs.CodeRepository(list(assets), default_executor=rs.Executor.in_process())


def lines(result: rs.RunResult, step: str) -> list[tuple[str, str, str]]:
    return [(e.logger, e.level, e.message) for e in result.step_results[step].logs]


def test_sync_and_async_steps_capture_their_output_and_records(capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(talker, async_talker).materialize()
    assert lines(result, "talker") == [
        ("stdout", "INFO", "to stdout and the rest"), ("stderr", "WARNING", "to stderr"),
        ("code-repo.assets.talker", "INFO", "an info record"),
    ]
    assert lines(result, "async_talker") == [
        ("stdout", "INFO", "async stdout"), ("code-repo.assets.async_talker", "WARNING", "async warning")]
    out, err = capsys.readouterr()  # in this process the output still reaches the console
    assert "to stdout and the rest" in out and "async stdout" in out
    assert "to stderr" in err
    assert not isinstance(sys.stdout, runtime._Router) and not isinstance(sys.stderr, runtime._Router)


def test_a_last_line_without_newline_is_kept_when_the_step_fails() -> None:
    result = in_process(unfinished_line).materialize(raise_on_error=False)
    assert lines(result, "unfinished_line") == [("stdout", "INFO", "no newline at the end")]


def test_the_runs_directory_gets_a_running_record_then_the_lines(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.RUNS_DIR_ENV, str(tmp_path))
    result = in_process(talker).materialize()
    records = logs.RecordReader(logs.run_log_path(result.run_id)).read()
    assert [r["kind"] for r in records] == ["running", "log", "log", "log"]
    assert records[0]["step"] == "talker" and records[0]["attempt"] == 1
    assert [r["message"] for r in records[1:]] == ["to stdout and the rest", "to stderr", "an info record"]


def test_a_step_keeps_its_last_entries_and_says_how_many_it_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "MAX_LOG_ENTRIES", 3)

    @rs.Asset
    def loud() -> int:
        for i in range(5):
            print(f"line {i}")
        return 1

    result = in_process(loud).materialize()
    assert [e.message for e in result.step_results["loud"].logs] == [
        "2 earlier lines of this step are not kept in its result", "line 2", "line 3", "line 4"]


def test_record_reader_waits_for_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "logs.jsonl"
    reader = logs.RecordReader(str(path))
    assert reader.read() == []
    path.write_text(json.dumps({"kind": "running"}) + "\n" + '{"kind": "lo')
    assert reader.read() == [{"kind": "running"}]
    with path.open("a") as handle:
        handle.write('g"}\n')
    assert reader.read() == [{"kind": "log"}]


def test_progress_counts_queued_until_a_process_starts_the_step() -> None:
    class Step:
        key, outputs, upstream_steps = "a", ("a",), frozenset()

    progress = RunProgress()
    progress("planned", Step(), None)  # type: ignore[arg-type]
    progress("started", Step(), None)  # type: ignore[arg-type]
    assert progress.counts()["queued"] == 1 and progress.counts()["running"] == 0
    progress.mark_running("a")
    assert progress.counts()["running"] == 1 and progress.counts()["queued"] == 0
    result = in_process(talker).materialize()
    progress("succeeded", Step(), result.step_results["talker"])  # type: ignore[arg-type]
    progress.mark_running("a")  # a late "running" record never undoes the end
    assert progress.counts()["succeeded"] == 1
    assert progress.rows["a"].logs == result.step_results["talker"].logs  # shown under the summary if it failed
