"""What every rivers command shares: `--version`, `--log-level`, help that lists the environment variables a
command reads and its exit codes, and a quiet end when stdout is a closed pipe (`rivers runs | head`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rivers import defaults, logs
from rivers.version import RIVERS_VERSION

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# The environment variables a command may read, a line each (named in the commands' epilogs).
ENV_HELP = {
    defaults.REDIS_URL_ENV: "the Redis of distributed mode (redis://, rediss://, unix://; a password allowed)",
    defaults.SECRET_ENV: "signs every job and report in Redis; the same value on coordinators and workers",
    defaults.LOG_LEVEL_ENV: f"{', '.join(LOG_LEVELS)} (default {defaults.DEFAULT_LOG_LEVEL}); --log-level sets it",
    defaults.LOG_FORMAT_ENV: "console or json (default: console on a terminal, json otherwise); logs go to stderr",
    "RIVERS_RUN_RETENTION_S": f"how long a submitted run's keys stay in Redis after it ends "
                              f"(default {defaults.RUN_RETENTION_S:g})",
    "RIVERS_PICKUP_TIMEOUT_S": "seconds before a step no worker consumes fails (default 60)",
    "RIVERS_RUNS_DIR": "where rivers materialize keeps each run's step logs (default .rivers/runs, under the "
                       "current directory), for RIVERS_RUN_RETENTION_S after they were last written",
    "RIVERS_UNSERVED_TIMEOUT_S": f"seconds before a submitted run no rivers-coordinator serves fails, saying so "
                                 f"(default {defaults.UNSERVED_TIMEOUT_S:g})",
    "RIVERS_MAX_PAYLOAD_BYTES": "the largest job a worker accepts, decompressed (default 16 MiB)",
    "RIVERS_SECRETS_IN_SPECS": "'encrypted': secret fields travel in step specs, encrypted under RIVERS_SECRET",
    "RIVERS_WORKER_IMAGE": "pod launcher: the image of step pods whose executor names none",
    "KUBECONFIG": "pod launcher: the cluster config outside a pod (default ~/.kube/config)",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks (its tables of variables and exit codes); wraps option help as usual."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(120, _columns()))


def _columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "")) or 100
    except ValueError:
        return 100


def epilog(env: Sequence[str], exits: Sequence[tuple[int, str]], extra: str = "") -> str:
    """The end of a command's help: the environment variables it reads and what its exit codes mean."""
    width = max(len(name) for name in env)
    lines = ["environment variables:"]
    lines += [f"  {name:<{width}}  {ENV_HELP[name]}" for name in env]
    lines += ["", "exit codes:"]
    lines += [f"  {code:<3}  {meaning}" for code, meaning in exits]
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def add_common(parser: argparse.ArgumentParser, *, version: bool = True, suppress: bool = False) -> None:
    """--version and --log-level. With `suppress`, an unused --log-level leaves the namespace alone (a
    subcommand's copy must not hide the one given before the subcommand)."""
    if version:
        parser.add_argument("--version", action="version", version=f"%(prog)s {RIVERS_VERSION}",
                            help="print the installed rivers version and exit")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                        default=argparse.SUPPRESS if suppress else None,
                        help=f"{', '.join(LOG_LEVELS)}: sets ${defaults.LOG_LEVEL_ENV} for this process and the "
                             f"processes it starts (default: ${defaults.LOG_LEVEL_ENV}, else "
                             f"{defaults.DEFAULT_LOG_LEVEL})")


def apply_log_level(args: argparse.Namespace) -> None:
    """--log-level wins over RIVERS_LOG_LEVEL; step processes started later inherit it through the environment."""
    level = getattr(args, "log_level", None)
    if level:
        os.environ[defaults.LOG_LEVEL_ENV] = level
        logs.reset()


def quiet_on_broken_pipe(main: Callable[[], int]) -> int:
    """Run `main`; a reader that went away (`rivers runs | head -1`) ends the command quietly, not with a
    BrokenPipeError traceback. Exit code 141 (128 + SIGPIPE), as a shell reports a process killed by it."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that this flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


EXIT_BROKEN_PIPE = 141

__all__ = ["ENV_HELP", "EXIT_BROKEN_PIPE", "LOG_LEVELS", "HelpFormatter", "add_common", "apply_log_level",
           "epilog", "quiet_on_broken_pipe"]
