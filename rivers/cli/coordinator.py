"""`rivers-coordinator --repo MODULE[:ATTR]`: the daemon that serves submitted runs (distributed mode)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from rivers import defaults
from rivers.cli.common import HelpFormatter, add_common, apply_log_level, epilog

PROG = "rivers-coordinator"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STOPPING = """stopping: SIGTERM or SIGINT (Ctrl-C) once: take no new run, finish the runs it owns, exit 0;
twice, or with Redis unreachable: exit 1 at once (another coordinator takes its runs over once their leases
expire, without redoing finished steps)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Serve runs submitted through Redis (rivers submit, repo.submit), resume interrupted ones.",
        epilog=epilog(
            [defaults.REDIS_URL_ENV, defaults.SECRET_ENV, defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV,
             "RIVERS_RUN_RETENTION_S", "RIVERS_PICKUP_TIMEOUT_S", "RIVERS_UNSERVED_TIMEOUT_S",
             "RIVERS_SECRETS_IN_SPECS"],
            [(EXIT_OK, "stopped by SIGTERM/SIGINT after the runs it owned ended"),
             (EXIT_FAILED, "stopped by a second signal or while Redis was unreachable; or lost Redis"),
             (EXIT_USAGE, "could not start: bad arguments, a repository that does not load, no Redis URL, "
                          "Redis unreachable"),
             (EXIT_INTERRUPTED, "interrupted while starting")],
            STOPPING),
    )
    add_common(parser)
    parser.add_argument("--repo", required=True, metavar="MODULE[:ATTR]",
                        help="the CodeRepository to serve; ATTR defaults to 'repo' (required). It takes only runs "
                             "submitted for this MODULE:ATTR: several coordinators may serve several repositories "
                             "on one Redis")
    parser.add_argument("--redis-url", metavar="URL", help=f"the Redis to serve (default: ${defaults.REDIS_URL_ENV})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_log_level(args)
    if defaults.ENVIRONMENT_ERRORS:
        return fail(defaults.ENVIRONMENT_ERRORS[0])
    from rivers.distributed.connection import redis_url

    url = redis_url(args.redis_url)
    if url is None:
        return fail(f"needs --redis-url or ${defaults.REDIS_URL_ENV}")
    os.environ[defaults.REDIS_URL_ENV] = url  # the runs it serves dispatch through this Redis
    try:
        return serve(args.repo, url)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def serve(target: str, url: str) -> int:
    import redis

    from rivers.cli import UsageError
    from rivers.cli.main import load_repository
    from rivers.cli.stopping import StopWatch, sigint_like_sigterm
    from rivers.distributed.connection import redacted
    from rivers.distributed.daemon import CoordinatorDaemon
    from rivers.distributed.runs import repository_of
    from rivers.exceptions import ConfigurationError, ExecutionError
    from rivers.logs import get_logger

    StopWatch("coordinator", url, second_signal_exits=True).start()
    signal.signal(signal.SIGINT, sigint_like_sigterm)  # the daemon handles SIGTERM; Ctrl-C means the same
    try:
        repo = load_repository(target)
        code = CoordinatorDaemon(url, repo, repository_of(target, repo)).serve()
        get_logger().info("coordinator.stopped", reason="a stop signal; the runs it owned have ended")
        return code
    except (UsageError, ConfigurationError, ExecutionError) as exc:
        return fail(str(exc))
    except redis.RedisError as exc:  # Redis went away for longer than the client's retries
        print(f"{PROG}: error: lost Redis at {redacted(url)}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
