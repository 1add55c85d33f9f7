"""A daemon stopped by SIGINT or SIGTERM ends within moments, also when Redis is gone.

The worker, the pod launcher and the coordinator stop gracefully on a signal (take nothing new, finish or hand
back what they hold), and each step of that talks to Redis, whose client retries a command for ~10 s before it
gives up. With Redis gone (`honcho start` stops it together with them) there is nothing left to finish: what a
process holds is leased, and the leases expire and are taken over elsewhere. So:

    signal (any handler the daemon installed) ──> byte on the wakeup fd ──> watch thread
        from the first SIGINT/SIGTERM on: PING Redis every PROBE_S, with short timeouts
            no answer            ──> log `<daemon>.exit` with the reason, end the process (exit 1)
            a second signal, with `second_signal_exits` (the coordinator) ──> the same, at once
        the graceful stop ends first ──> nothing to do (the thread is a daemon)

`signal.set_wakeup_fd` is what tells the thread: the C-level handler writes the signal's number there even while
the main thread is stuck inside a Redis call, whichever Python handler the daemon installed for it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from rivers.distributed.connection import redacted
from rivers.logs import get_logger

PROBE_S = 0.5  # how often a stopping process asks whether Redis still answers
PROBE_TIMEOUT_S = 1.0  # connecting to and hearing from Redis, for one probe
EXIT_UNCLEAN = 1  # stopped without finishing or handing back what it held (Redis gone, or a second signal)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def redis_answers(url: str) -> str | None:
    """None if Redis answers a PING at once, else why not (one line)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        client.ping()
        return None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    except redis.RedisError:  # it answered (a refused password, say): reachable
        return None
    finally:
        with contextlib.suppress(Exception):
            client.close()


class StopWatch:
    """Watches a daemon's stop signals from a thread; ends the process when its graceful stop cannot finish."""

    def __init__(self, daemon: str, url: str, *, second_signal_exits: bool = False,
                 before_exit: Callable[[], None] | None = None) -> None:
        self.daemon = daemon
        self.url = url
        self.second_signal_exits = second_signal_exits
        self.before_exit = before_exit
        self.signals = 0
        self._read_fd = -1

    def start(self) -> None:
        """Call from the main thread, before the daemon installs its signal handlers (or after: either works)."""
        if threading.current_thread() is not threading.main_thread():
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._read_fd = read_fd
        threading.Thread(target=self._watch, name="rivers-stop-watch", daemon=True).start()

    def _watch(self) -> None:
        self._wait_for_signal(None)
        while True:
            reason = redis_answers(self.url)
            if reason is not None:
                self.exit(f"Redis at {redacted(self.url)} does not answer ({reason}); what this process held is "
                          "taken over elsewhere once its leases expire")
            if self._wait_for_signal(PROBE_S) and self.second_signal_exits and self.signals > 1:
                self.exit("a second stop signal; the runs this process owned are taken over by another "
                          "coordinator once their leases expire")

    def _wait_for_signal(self, timeout: float | None) -> bool:
        """Block until a stop signal arrives (or `timeout` passes); True if one did."""
        arrived = False
        while True:
            ready, _, _ = select.select([self._read_fd], [], [], timeout)
            if not ready:
                return arrived
            data = os.read(self._read_fd, 64)
            stops = sum(1 for number in data if number in STOP_SIGNALS)
            self.signals += stops
            arrived = arrived or stops > 0
            if arrived and timeout is None:
                return True

    def exit(self, reason: str) -> None:
        """Log why and end the process now, from this thread (the main one may be inside a Redis retry)."""
        with contextlib.suppress(Exception):
            get_logger().warning(f"{self.daemon}.exit", reason=reason, pid=os.getpid())
        if self.before_exit is not None:
            with contextlib.suppress(Exception):
                self.before_exit()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(EXIT_UNCLEAN)


def sigint_like_sigterm(frame_signum: int, frame: Any) -> None:
    """A SIGINT handler for a daemon that handles SIGTERM only: Ctrl-C does what SIGTERM does."""
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler):
        handler(frame_signum, frame)
        return
    raise KeyboardInterrupt


__all__ = ["EXIT_UNCLEAN", "StopWatch", "redis_answers", "sigint_like_sigterm"]
