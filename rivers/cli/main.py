"""`rivers`: run a repository from the command line (API.md §10).

Exit codes: 0 the run succeeded, 1 it failed, 2 the command could not start (bad arguments, a module
that does not import, a missing attribute, a repository that does not resolve), 130 interrupted, 141 its reader
went away (a closed pipe).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from rivers import defaults, exceptions, logs
from rivers.cli import UsageError
from rivers.cli.common import EXIT_BROKEN_PIPE, HelpFormatter, add_common, apply_log_level, epilog, quiet_on_broken_pipe
from rivers.cli.config import add_config_arguments, check_run_config, run_config
from rivers.cli.logs import LiveLogs, add_logs_command, logs_command, with_runs_dir
from rivers.cli.progress import RunProgress, print_interrupted, print_summary
from rivers.launch import hint

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository
    from rivers.results import RunResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RIVERS_ERRORS = tuple(getattr(exceptions, name) for name in exceptions.__all__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rivers", formatter_class=HelpFormatter, description="Materialize rivers assets.",
        epilog=epilog([defaults.REDIS_URL_ENV, defaults.SECRET_ENV, defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV,
                       "RIVERS_RUN_RETENTION_S", "RIVERS_PICKUP_TIMEOUT_S"], EXIT_CODES),
    )
    add_common(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _command(commands, "materialize", "run a repository in this process, with progress")
    with_runs_dir(run)
    _target_arguments(run)
    from rivers.cli.runs import add_submit_arguments, cancel_arguments, run_arguments, runs_arguments

    submit = _command(commands, "submit", "submit a run to the rivers-coordinator serving its repository")
    _target_arguments(submit)
    add_submit_arguments(submit)
    runs_arguments(_command(commands, "runs", "list the latest runs, submitted and embedded (RIVERS_REDIS_URL)"))
    run_arguments(_command(commands, "run", "show one run and its steps: attempts, worker, reason, duration"))
    cancel_arguments(_command(commands, "cancel", "cancel a submitted run: its queued steps are withdrawn"))
    add_logs_command(commands, _command)
    return parser


EXIT_CODES = [
    (EXIT_OK, "the run succeeded (or the command did what it was asked)"),
    (EXIT_FAILED, "the run failed"),
    (EXIT_USAGE, "could not start: bad arguments, a module that does not import, a missing attribute,\n"
                 "       a repository that does not resolve, no Redis"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_BROKEN_PIPE, "its reader went away (`rivers runs | head`)"),
]


def _command(commands: Any, name: str, summary: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", formatter_class=HelpFormatter,
        epilog=epilog([defaults.REDIS_URL_ENV, defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV], EXIT_CODES))
    add_common(sub, version=False, suppress=True)
    return sub


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE[:ATTR]",
                        help="module and CodeRepository attribute (default ATTR: repo); the current directory is "
                             "on the module path")
    picked = parser.add_mutually_exclusive_group()
    picked.add_argument("--select", action="append", metavar="A,B",
                        help="assets or tasks to run, comma-separated or repeated (default: all)")
    picked.add_argument("--job", metavar="NAME", help="run this job of the repository (default: none)")
    parser.add_argument("--include-upstream", action="store_true",
                        help="also run the upstreams of --select (default: only the selected ones)")
    add_config_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    return quiet_on_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    apply_log_level(args)
    if defaults.ENVIRONMENT_ERRORS:
        return fail(defaults.ENVIRONMENT_ERRORS[0])
    if getattr(args, "include_upstream", False) and args.job:
        return fail("--include-upstream applies to --select, not to --job")
    if args.command == "logs":
        try:
            return logs_command(args)
        except (UsageError, *RIVERS_ERRORS) as exc:
            return fail(str(exc))
    if args.command != "materialize":
        from rivers.cli.runs import distributed_command

        return distributed_command(args)
    try:
        return materialize(args)
    except UsageError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("rivers: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def fail(message: str) -> int:
    print(f"rivers: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- materialize -----------------------------------------------------------------------------
def materialize(args: argparse.Namespace) -> int:
    repo = load_repository(args.target)
    try:
        progress = RunProgress()
        start = prepare(repo, args, progress)
        console = make_console()
        live = LiveLogs(progress, console)  # step logs: kept in the runs directory, WARNING+ shown live
        from rivers.run import listening
        try:
            with display(console, progress), listening(live), live:
                result = _guarded(start)
        except KeyboardInterrupt:  # Ctrl-C: what ran so far, and which run it was
            live.end("interrupted")
            print_interrupted(console, progress)
            return EXIT_INTERRUPTED
        live.end("succeeded" if result.success else "failed")
        print_summary(console, progress, result)
        return EXIT_OK if result.success else EXIT_FAILED
    finally:
        repo.shutdown()


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (`| head`): end like every other command does (quiet_on_broken_pipe)."""
        self.quiet = True
        raise BrokenPipeError


def make_console() -> Console:
    """stdout; when it is not a terminal, wide enough that the summary table keeps one line per step."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return _Console()
    return _Console(width=160)


def load_repository(target: str) -> CodeRepository:
    """Import MODULE (the current directory first on sys.path) and return its ATTR (default `repo`)."""
    from rivers.definitions.repository import CodeRepository

    module_name, _, attr = target.partition(":")
    attr = attr or "repo"
    if not module_name or target.endswith(":"):
        raise UsageError(f"'{target}' is not MODULE[:ATTR] (e.g. examples.demo:repo)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name = module_of_path(module_name)
    module = _import(module_name)
    if not hasattr(module, attr):
        found = [n for n, v in vars(module).items() if isinstance(v, CodeRepository)]
        hint = f"; it has {', '.join(repr(n) for n in found)}" if found else ""
        raise UsageError(f"module '{module_name}' has no attribute '{attr}'{hint}")
    repo = getattr(module, attr)
    if not isinstance(repo, CodeRepository):
        raise UsageError(f"'{module_name}:{attr}' is of type {type(repo).__name__}, not a rivers CodeRepository")
    return repo


def module_of_path(spec: str) -> str:
    """`shop.py`, `./shop.py`, `pkg/shop.py`: the dotted module name of that file (its first directory that is
    not a package goes first on sys.path). Anything else is already a module name."""
    if not spec.endswith(".py") and "/" not in spec and os.sep not in spec:
        return spec
    path = Path(spec)
    if not path.is_file():
        siblings = sorted(str(p.relative_to(path.parent)) for p in path.parent.glob("*.py")) \
            if path.parent.is_dir() else []
        raise UsageError(f"no file '{spec}' (MODULE[:ATTR] or FILE.py[:ATTR]); "
                         f"{hint(path.name, siblings, 'Python files')}")
    path = path.resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ".".join(parts)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            parent, dot, leaf = exc.name.rpartition(".")
            close = difflib.get_close_matches(leaf, _modules_beside(exc.name), n=3)
            meant = f"; did you mean {' or '.join(repr(parent + dot + c) for c in close)}?" if close else ""
            raise UsageError(f"no module named '{name}' (searched {os.getcwd()} and sys.path){meant}") from None
        raise UsageError(f"importing '{name}' failed: {describe(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise UsageError(f"importing '{name}' failed: {describe(exc)}") from None


def _modules_beside(missing: str) -> list[str]:
    """The module names next to one that is not there: in its package, else in the current directory."""
    import pkgutil

    parent, _, _ = missing.rpartition(".")
    if parent:
        package = sys.modules.get(parent)
        paths = list(getattr(package, "__path__", []))
    else:
        paths = [os.getcwd()]
    return sorted(info.name for info in pkgutil.iter_modules(paths))


def describe(exc: BaseException) -> str:
    """`Type: message (file:line)` — where the exception was raised, without the traceback."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    ours = os.path.dirname(os.path.dirname(__file__))  # the rivers package
    user = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith(ours)]
    if user:
        frame = user[-1]
        text += f" ({os.path.relpath(frame.filename)}:{frame.lineno})"
    return text


_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line \d+')
_REMOTE_RIVERS = re.compile(r"[/\\]site-packages[/\\]rivers[/\\]")  # rivers on a worker or in a pod


def user_traceback(text: str) -> str:
    """A formatted traceback without rivers' own frames (nor importlib's): what is left is the user's code.
    A run of hidden frames becomes one `[rivers frames hidden]` line, so the shape stays readable."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the rivers package
    kept: list[str] = []
    hiding = False
    for line in text.splitlines():
        frame = _FRAME.match(line)
        if frame is not None:
            name = frame["file"]
            hiding = name.startswith(ours + os.sep) or _REMOTE_RIVERS.search(name) is not None or \
                name.startswith("<frozen importlib") or f"{os.sep}importlib{os.sep}" in name
            if hiding and not (kept and kept[-1].endswith("[rivers frames hidden]")):
                kept.append("  [rivers frames hidden]")
            if not hiding:
                kept.append(line)
            continue
        if hiding and line.startswith("    "):  # the hidden frame's source line and its carets
            continue
        hiding = False
        kept.append(line)
    return "\n".join(kept)


def selected(args: argparse.Namespace) -> list[str] | None:
    """The names given with --select (repeatable, comma-separated); None selects everything."""
    return [name.strip() for item in args.select or [] for name in item.split(",") if name.strip()] or None


def check_names(repo: CodeRepository, selection: list[str] | None, job: str | None) -> None:
    """Resolve the repository and check the --select / --job names: a UsageError naming the unknown one
    and the close matches (or the known names), before anything runs or is submitted."""
    try:
        graph = repo._resolve()
    except RIVERS_ERRORS as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code failed while the repository resolved
        raise UsageError(f"the repository could not be prepared: {describe(exc)}") from None
    if job is not None:
        jobs = [known.name for known in repo._jobs]
        if job not in jobs:
            raise UsageError(f"NodeNotFoundError: Job '{job}' not found in the repository; {hint(job, jobs, 'jobs')}")
    names = set(graph.graphs) | set(graph.nodes) | set(graph.producer)
    for name in selection or []:
        if name not in names:
            raise UsageError(f"AssetNotFoundError: Asset '{name}' not found in the repository; "
                             f"{_left_out(repo, name) or hint(name, sorted(names), 'assets and tasks')}")


def _left_out(repo: CodeRepository, name: str) -> str | None:
    """`asset 'x' is defined in module m but not in the repository's assets=[...]`, when it is."""
    from rivers.definitions.nodes import NodeDefinition
    from rivers.definitions.tasks import Task

    modules = {getattr(d.fn, "__module__", None) for d in repo._definitions if isinstance(d, NodeDefinition)}
    for module in sorted(m for m in modules if m):
        value = getattr(sys.modules.get(module), name, None)
        if isinstance(value, NodeDefinition):
            kind, listing = ("task", "tasks") if isinstance(value, Task) else ("asset", "assets")
            return f"{kind} '{name}' is defined in module {module} but not in the repository's {listing}=[...]"
    return None


def prepare(repo: CodeRepository, args: argparse.Namespace, progress: RunProgress) -> Callable[[], RunResult]:
    """Resolve before anything runs, so that every definition error is a usage error. A materialization's run id
    is chosen here, so that an interrupted run can be named (a job's is learnt from its first step result)."""
    selection = selected(args)
    config = run_config(args)
    check_names(repo, selection, args.job)
    check_run_config(repo, config)
    try:
        repo.validate()
        if args.job:
            start: Callable[[], RunResult] = partial(repo.get_job(args.job).execute, raise_on_error=False,
                                                     config=config)
        else:
            progress.run_id = str(uuid.uuid4())
            start = partial(repo.materialize, selection=selection, include_upstream=args.include_upstream,
                            raise_on_error=False, run_id_override=progress.run_id, config=config)
    except RIVERS_ERRORS as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code (a resource setup()) failed before the run
        raise UsageError(f"the repository could not be prepared: {describe(exc)}") from None
    return start


def _guarded(start: Callable[[], RunResult]) -> RunResult:
    """Run; a rivers error that stops the run before its steps (bad executor or config) is a usage error."""
    try:
        return start()
    except RIVERS_ERRORS as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def display(console: Console, progress: RunProgress) -> Iterator[None]:
    """Listen to the run; on a terminal, also redraw a live display (logs and prints scroll above it)."""
    from rivers.run import listening

    with listening(progress):
        if not console.is_terminal:
            yield
            return
        # Logs are redirected above the display only when they would reach the same terminal anyway.
        shared = sys.stderr.isatty()
        with quiet_logs(shared), Live(console=console, get_renderable=progress.render, refresh_per_second=8,
                                      transient=True, redirect_stdout=True, redirect_stderr=shared):
            yield


@contextmanager
def quiet_logs(enabled: bool) -> Iterator[None]:
    """Step events at INFO would push the live display around; keep WARNING+ unless the user chose a level."""
    if not enabled or defaults.LOG_LEVEL_ENV in os.environ:
        yield
        return
    os.environ[defaults.LOG_LEVEL_ENV] = "WARNING"
    logs.reset()
    try:
        yield
    finally:
        os.environ.pop(defaults.LOG_LEVEL_ENV, None)
        logs.reset()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
