"""structlog for rivers' own events, configured once; stdlib loggers for `context.log`.

We wrap our own logger instead of calling `structlog.configure`, so that a user's structlog
setup and ours never overwrite each other.
"""

from __future__ import annotations

import logging
import os
import sys
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
                logging.getLogger(name).setLevel(level)
    return _logger


def reset() -> None:
    """Forget the configured logger (tests that change RIVERS_LOG_* call this)."""
    global _logger
    _logger = None
