"""Step logs on the command line: what `rivers materialize` keeps and shows live, and `rivers logs`.

    rivers materialize ── sets $RIVERS_RUNS_DIR (default ./.rivers/runs) ──> every step it runs here (its own
        process, its pool processes) appends "running" and "log" records to <dir>/<run id>/logs.jsonl as they
        happen (rivers.runtime.StepLog); steps that ran elsewhere (rivers-workers, pods) bring their logs in
        their StepResult, which LiveLogs appends when the step ends
    LiveLogs (a thread) tails the file: "running" -> the display's running count, WARNING+ -> printed above it
    rivers logs RUN_ID [STEP] [--follow] ── the run's file, else the run in Redis (its steps' final results)
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console

from rivers import defaults, logs
from rivers.cli import UsageError
from rivers.cli.progress import log_line
from rivers.results import LogEntry, StepResult

if TYPE_CHECKING:
    from rivers.cli.progress import RunProgress
    from rivers.plan import Step

POLL_S = 0.1  # how often materialize reads the run's log file
FOLLOW_POLL_S = 0.5  # how often `rivers logs --follow` looks for more
LIVE_LEVELS = ("WARNING", "ERROR", "CRITICAL")
STREAMS = ("stdout", "stderr")


def use_runs_dir() -> str:
    """Make sure steps of this process (and of the processes it starts) write their logs; the directory."""
    base = os.path.abspath(logs.runs_dir() or logs.DEFAULT_RUNS_DIR)
    os.environ[logs.RUNS_DIR_ENV] = base
    logs.prune_runs(base, defaults.RUN_RETENTION_S)  # kept as long as runs are kept in Redis
    return base


class LiveLogs:
    """A run listener and a tail of the run's log file, for `rivers materialize`."""

    def __init__(self, progress: RunProgress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self.base = use_runs_dir()
        self.before = set(_listing(self.base))  # a job's run id is learnt from the directory it creates
        self.reader: logs.RecordReader | None = None
        self.streamed: set[tuple[str, int]] = set()  # (step, attempt) that wrote their own records
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rivers-live-logs", daemon=True)

    def __enter__(self) -> LiveLogs:
        if self.progress.run_id is not None:
            self._open(self.progress.run_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()  # what was written since the last tick

    def end(self, status: str) -> None:
        """The run ended: say so in its file (`rivers logs --follow` stops there)."""
        run_id = self.progress.run_id
        if run_id is not None:
            logs.append_record(logs.run_log_path(run_id, self.base), {"kind": "end", "status": status,
                                                                       "time": time.time()})

    def _open(self, run_id: str) -> None:
        path = logs.run_log_path(run_id, self.base)
        logs.append_record(path, {"kind": "run", "pid": os.getpid(), "time": time.time()})
        self.reader = logs.RecordReader(path)

    # -- the listener: steps that ran elsewhere bring their logs with their result --------------------------
    def __call__(self, event: str, step: Step, result: StepResult | None) -> None:
        if event not in ("succeeded", "failed", "attempt_failed") or result is None or not result.logs:
            return
        if self.reader is None:
            self._open(result.run_id)
        self._tick()  # the step's own records, if it wrote them, are in the file by now
        with self._lock:
            if (result.step_key, result.attempt) in self.streamed:
                return
        path = logs.run_log_path(result.run_id, self.base)
        logs.append_record(path, {"kind": "running", "step": result.step_key, "attempt": result.attempt,
                                  "pid": result.pid, "time": result.started_at})
        for entry in result.logs:
            logs.append_record(path, {"kind": "log", "step": result.step_key, "attempt": result.attempt,
                                      "pid": result.pid, **entry.model_dump()})

    # -- the tail ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            if self.reader is None:
                run_id = self.progress.run_id or self._new_run()
                if run_id is None:
                    return
                self._open(run_id)
            assert self.reader is not None
            for record in self.reader.read():
                self._show(record)

    def _new_run(self) -> str | None:
        new = [name for name in _listing(self.base) if name not in self.before]
        return new[0] if len(new) == 1 else None

    def _show(self, record: dict[str, Any]) -> None:
        kind, step = record.get("kind"), record.get("step")
        if kind == "running" and isinstance(step, str):
            self.streamed.add((step, int(record.get("attempt", 0))))
            self.progress.mark_running(step)
        elif kind == "log" and record.get("level") in LIVE_LEVELS and isinstance(step, str):
            if record.get("pid") == os.getpid() and record.get("logger") in STREAMS:
                return  # a step of this process: its stdout/stderr reached the terminal already
            self.console.print(log_line(_entry(record), step), soft_wrap=True, highlight=False)


def _listing(base: str) -> list[str]:
    try:
        return os.listdir(base)
    except OSError:
        return []


def _entry(record: dict[str, Any]) -> LogEntry:
    return LogEntry(logger=str(record.get("logger", "")), level=str(record.get("level", "INFO")),
                    message=str(record.get("message", "")), created=float(record.get("created", 0.0)))


# -- rivers logs ------------------------------------------------------------------------------------------
def with_runs_dir(parser: argparse.ArgumentParser) -> None:
    """Name $RIVERS_RUNS_DIR first among the environment variables of a command's help."""
    from rivers.cli.common import ENV_HELP

    head = "environment variables:\n"
    if parser.epilog and head in parser.epilog:
        listed = parser.epilog.split(head, 1)[1].split("\n\n", 1)[0].splitlines()
        width = max(len(line.split()[0]) for line in listed) if listed else len(logs.RUNS_DIR_ENV)
        line = f"  {logs.RUNS_DIR_ENV:<{width}}  {ENV_HELP[logs.RUNS_DIR_ENV]}\n"
        parser.epilog = parser.epilog.replace(head, head + line, 1)


def add_logs_command(commands: Any, make: Any) -> None:
    """The `logs` subcommand (`make` is main's _command)."""
    sub = make(commands, "logs", "print the step logs of a run (local or submitted)")
    with_runs_dir(sub)
    sub.description = (
        "Print what the steps of a run logged (context.log) and printed (stdout, stderr): time, step, level, "
        f"message. Runs made by `rivers materialize` keep their logs in ${logs.RUNS_DIR_ENV}/<run id>/{logs.LOG_FILE} "
        f"(default: {logs.DEFAULT_RUNS_DIR} under the current directory); runs submitted to a rivers-coordinator "
        f"(and, with ${defaults.REDIS_URL_ENV} set, any run found in Redis) keep them in Redis with the run."
    )
    sub.add_argument("run_id", metavar="RUN_ID", help="a run id, as materialize, submit and runs print it")
    sub.add_argument("step", metavar="STEP", nargs="?", default=None, help="only this step (default: every step)")
    sub.add_argument("--follow", "-f", action="store_true",
                     help="keep printing new lines until the run ends (default: print what there is and return)")


def logs_command(args: argparse.Namespace) -> int:
    """`rivers logs`: the run's file under the runs directory, else the run in Redis."""
    base = os.path.abspath(logs.runs_dir() or logs.DEFAULT_RUNS_DIR)
    path = logs.run_log_path(args.run_id, base)
    from rivers.cli.main import make_console

    console = make_console()
    if os.path.exists(path):
        for step, attempt, entry in _local(path, args.follow):
            _print(console, args.step, step, attempt, entry)
        return 0
    from rivers.distributed.connection import redis_url

    url = redis_url()
    if url is None:
        raise UsageError(f"no run '{args.run_id}' in {base} (set {defaults.REDIS_URL_ENV} for runs submitted to a "
                         "rivers-coordinator)")
    for step, attempt, entry in _redis(url, args.run_id, base, args.follow):
        _print(console, args.step, step, attempt, entry)
    return 0


def _print(console: Console, wanted: str | None, step: str, attempt: int, entry: LogEntry) -> None:
    """One line; a retry's lines name their attempt (`step#2`)."""
    if wanted is None or step == wanted:
        label = f"{step}#{attempt}" if attempt > 1 else step
        console.print(log_line(entry, label, date=True), soft_wrap=True, highlight=False)


def _local(path: str, follow: bool) -> Iterator[tuple[str, int, LogEntry]]:
    reader = logs.RecordReader(path)
    pid: int | None = None
    while True:
        ended = False
        for record in reader.read():
            kind = record.get("kind")
            if kind == "log":
                yield str(record.get("step", "")), int(record.get("attempt", 1)), _entry(record)
            elif kind == "run":
                pid = int(record.get("pid", 0)) or None
            elif kind == "end":
                ended = True
        if ended or not follow or (pid is not None and not _alive(pid)):
            return
        time.sleep(FOLLOW_POLL_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redis(url: str, run_id: str, base: str, follow: bool) -> Iterator[tuple[str, int, LogEntry]]:
    """A run in Redis: each step's logs from its final result, in time order, as steps end."""
    from rivers.distributed.connection import check_reachable, connect
    from rivers.distributed.runs import FINAL
    from rivers.queues import keys

    check_reachable(url)
    client: Any = connect(url)
    status = client.hget(keys.run_key(run_id), "status")
    if status is None:
        raise UsageError(f"no run '{run_id}' in {base} nor in Redis (runs are kept RIVERS_RUN_RETENTION_S="
                         f"{defaults.RUN_RETENTION_S:g} s after they end)")
    shown: set[tuple[str, int]] = set()  # (step, attempt): a final failure is in both hashes
    while True:
        status = client.hget(keys.run_key(run_id), "status")
        pipe = client.pipeline(transaction=False)
        pipe.hvals(keys.run_attempts_key(run_id))
        pipe.hvals(keys.run_steps_key(run_id))
        results = [StepResult.model_validate_json(raw) for values in pipe.execute() for raw in values]
        results = [r for r in {(r.step_key, r.attempt): r for r in results}.values()
                   if (r.step_key, r.attempt) not in shown]
        lines = [(result.step_key, result.attempt, entry) for result in results for entry in result.logs]
        shown.update((result.step_key, result.attempt) for result in results)
        yield from sorted(lines, key=lambda line: line[2].created)
        if not follow or status is None or status.decode() in FINAL:
            return
        time.sleep(FOLLOW_POLL_S)


__all__ = ["LiveLogs", "add_logs_command", "logs_command", "use_runs_dir", "with_runs_dir"]

