"""structlog for rivers' own events, configured once; stdlib loggers for `context.log`.

We wrap our own logger instead of calling `structlog.configure`, so that a user's structlog
setup and ours never overwrite each other.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import structlog

from rivers import defaults

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_logger: Any = None


class _StderrLogger:
    """Writes to whatever `sys.stderr` is now (a live progress display may have replaced it)."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def log_level() -> int:
    return _LEVELS.get(os.environ.get(defaults.LOG_LEVEL_ENV, defaults.DEFAULT_LOG_LEVEL).upper(), logging.INFO)


def step_log_level(level: int) -> int:
    """The level of context.log: INFO and above are always captured (`rivers logs` shows them), DEBUG on demand."""
    return min(level, logging.INFO)


def _renderer() -> Any:
    wanted = os.environ.get(defaults.LOG_FORMAT_ENV, "").lower()
    if wanted == "json" or (wanted != "console" and not sys.stderr.isatty()):
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def get_logger() -> Any:
    """rivers' structlog logger (built on first use)."""
    global _logger
    if _logger is None:
        level = log_level()
        _logger = structlog.wrap_logger(
            _StderrLogger(),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                _renderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=True,
        ).bind(logger="rivers")
        for name in ("code-repo.assets", "code-repo.tasks"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(step_log_level(level))
    return _logger


def reset() -> None:
    """Forget the configured logger (tests that change RIVERS_LOG_* call this)."""
    global _logger
    _logger = None


# -- step logs of embedded runs: one JSON-lines file per run ------------------------------------------------
#
#   <RIVERS_RUNS_DIR>/<run id>/logs.jsonl, appended by every process that runs a step of the run on this machine
#   (the coordinator's own process and its pool processes) while the step runs:
#     {"kind": "run", "pid": ..., "time": ...}                          the run began (written by `rivers materialize`)
#     {"kind": "running", "step": ..., "attempt": ..., "pid": ..., "time": ...}     a process started the step
#     {"kind": "log", "step": ..., "attempt": ..., "pid": ..., "logger": ..., "level": ..., "message": ...,
#      "created": ...}                                              a context.log record or a line of stdout/stderr
#     {"kind": "end", "status": "succeeded" | "failed", "time": ...}    the run ended
#   Each record is one write(2) on a file opened with O_APPEND, so records of several processes never interleave.

RUNS_DIR_ENV = "RIVERS_RUNS_DIR"
DEFAULT_RUNS_DIR = os.path.join(".rivers", "runs")
LOG_FILE = "logs.jsonl"


def runs_dir() -> str | None:
    """Where step logs of embedded runs are written: $RIVERS_RUNS_DIR, or None (not written) when unset."""
    return os.environ.get(RUNS_DIR_ENV) or None


def run_log_path(run_id: str, base: str | None = None) -> str:
    """The log file of one run under `base` (default: $RIVERS_RUNS_DIR, else .rivers/runs of the current dir)."""
    return os.path.join(base or runs_dir() or DEFAULT_RUNS_DIR, run_id, LOG_FILE)


def prune_runs(base: str, retention_s: float, now: float | None = None) -> list[str]:
    """Delete the run directories under `base` whose log was last written more than `retention_s` ago (the
    retention of runs in Redis, RIVERS_RUN_RETENTION_S); the run ids deleted."""
    import shutil

    oldest = (time.time() if now is None else now) - retention_s
    pruned = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    for entry in entries:
        log = os.path.join(entry.path, LOG_FILE)
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            written = os.stat(log if os.path.exists(log) else entry.path).st_mtime
        except OSError:
            continue
        if written >= oldest:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        pruned.append(entry.name)
    return pruned


def append_record(path: str, record: dict[str, Any]) -> None:
    """Append one record to a run's log file (created with its directory); never raises for I/O errors."""
    import json

    line = (json.dumps(record, default=str) + "\n").encode()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.write(fd, line)
    except OSError:
        pass
    finally:
        os.close(fd)


class RecordReader:
    """Reads the complete records appended to a log file since the last call (a partial last line waits)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self._rest = b""

    def read(self) -> list[dict[str, Any]]:
        import json

        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a record cut short by a crash
        return records
