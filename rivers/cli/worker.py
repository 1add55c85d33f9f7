"""`rivers-worker`: consumes a step queue (distributed mode) or runs one step in a pod."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rivers import defaults
from rivers.cli.common import HelpFormatter, add_common, apply_log_level, epilog

if TYPE_CHECKING:
    from rivers.distributed.worker import Worker

PROG = "rivers-worker"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STOPPING = """stopping: SIGTERM or SIGINT (Ctrl-C) once: take nothing new, finish the running steps, exit 0; twice: hand
them back to the queue, exit 0. With Redis unreachable it exits within a second or two, exit 1 (the steps it
held are retried elsewhere once their 5 s leases expire)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Run rivers steps taken from Redis: a parallel worker (a pool of warm step processes),\n"
                    "the Kubernetes pod launcher, or the one step of a step pod.",
        epilog=epilog(
            [defaults.REDIS_URL_ENV, defaults.SECRET_ENV, defaults.LOG_LEVEL_ENV, defaults.LOG_FORMAT_ENV,
             "RIVERS_MAX_PAYLOAD_BYTES", "RIVERS_WORKER_IMAGE", "KUBECONFIG"],
            [(EXIT_OK, "stopped by SIGTERM/SIGINT, or --burst and the queue is empty; a step pod: its step succeeded"),
             (EXIT_FAILED, "stopped while Redis was unreachable, or lost Redis; a step pod: its step failed"),
             (EXIT_USAGE, "could not start: bad arguments, no Redis URL, Redis unreachable, a name in use"),
             (EXIT_INTERRUPTED, "interrupted while starting")],
            STOPPING),
    )
    add_common(parser)
    parser.add_argument("--executor", default="parallel", choices=["parallel", "kubernetes"], metavar="EXECUTOR",
                        help="the queue to consume: 'parallel' steps, or 'kubernetes' steps (the pod launcher) "
                             "(default: parallel)")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="parallel: step processes (default: the CPUs this process may use); kubernetes "
                             f"launcher: step pods followed at once (default: {defaults.LAUNCHER_MAX_PODS})")
    parser.add_argument("--redis-url", metavar="URL", help=f"the Redis to consume (default: ${defaults.REDIS_URL_ENV})")
    parser.add_argument("--name", metavar="NAME",
                        help="parallel: this worker's name in Redis and in RQ's view (rq info, rq-dashboard); "
                             "unique among live workers (default: HOST.PID.RANDOM)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty (default: keep waiting)")
    parser.add_argument("--path", action="append", metavar="DIR", default=[],
                        help="also import steps' modules from DIR, like `rq worker --path`; repeatable (default: "
                             "only the current directory)")
    parser.add_argument("--step", metavar="STEP_ID",
                        help="the one step a pod runs, with --executor kubernetes (default: none: consume a queue)")
    launcher = parser.add_argument_group("pod launcher (--executor kubernetes without --step)")
    launcher.add_argument("--namespace", metavar="NS",
                          help="where steps' Jobs go unless their executor names one (default: the launcher's own "
                               "namespace, else the kubeconfig context's, else 'default')")
    launcher.add_argument("--kubeconfig", metavar="FILE",
                          help="default: the in-cluster service account in a pod, else $KUBECONFIG or ~/.kube/config")
    launcher.add_argument("--start-timeout", type=float, metavar="S", default=defaults.POD_START_TIMEOUT_S,
                          help="a step pod not running by then fails: 'pod never started: <reason>' "
                               f"(default: {defaults.POD_START_TIMEOUT_S:g})")
    launcher.add_argument("--redis-secret", metavar="NAME", default="rivers-redis",
                          help="the Secret whose key 'url' step pods read RIVERS_REDIS_URL from "
                               "(default: rivers-redis)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.step and args.executor != "kubernetes":
        parser.error("--step is for step pods: --executor kubernetes --step JOB_ID")
    for directory in args.path:
        if not os.path.isdir(directory):
            parser.error(f"--path {directory}: not a directory")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.name is not None:
        if args.executor != "parallel":
            parser.error("--name names a parallel worker; the pod launcher and step pods name themselves")
        if not args.name or any(c.isspace() or not c.isprintable() for c in args.name):
            parser.error(f"--name {args.name!r}: a worker's name is printable, without spaces")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    apply_log_level(args)
    if defaults.ENVIRONMENT_ERRORS:
        return fail(defaults.ENVIRONMENT_ERRORS[0])
    from rivers.distributed.connection import redis_url

    url = redis_url(args.redis_url)
    if url is None:
        return fail(f"distributed mode needs --redis-url or ${defaults.REDIS_URL_ENV}")
    if os.getcwd() not in sys.path:  # steps are imported by module name, like `rivers materialize` does
        sys.path.insert(0, os.getcwd())
    add_paths(args.path)
    try:
        return serve(args, url)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_paths(directories: list[str]) -> None:
    """--path DIR: first on this process's sys.path and, through PYTHONPATH, on its step processes'."""
    added = [os.path.abspath(directory) for directory in directories]
    for directory in reversed(added):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    if added:
        inherited = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([*added, *([inherited] if inherited else [])])


def serve(args: argparse.Namespace, url: str) -> int:
    import redis

    from rivers.cli.stopping import StopWatch
    from rivers.distributed.connection import redacted
    from rivers.exceptions import ConfigurationError, ExecutionError

    try:
        if args.step:
            run_step_pod(url, args.step)
        if args.executor == "kubernetes":
            from rivers.kubernetes.launcher import Launcher

            StopWatch("launcher", url).start()
            return Launcher(url, namespace=args.namespace, kubeconfig=args.kubeconfig, max_pods=args.concurrency,
                            start_timeout=args.start_timeout, redis_secret=args.redis_secret, burst=args.burst).run()
        worker = make_worker(url, args)
        StopWatch("worker", url, before_exit=lambda: kill_pool(worker)).start()
        return worker.run()
    except (ConfigurationError, ExecutionError) as exc:
        return fail(str(exc))
    except redis.RedisError as exc:  # Redis went away for longer than the client's retries
        print(f"{PROG}: error: lost Redis at {redacted(url)}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_step_pod(url: str, step: str) -> None:
    """A step pod's one step; ends the process at once (its slot frees when the pod has ended)."""
    from rivers.distributed.step_pod import StepPod

    code = StepPod(url, step).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown


def make_worker(url: str, args: argparse.Namespace) -> Worker:
    """A parallel worker; a --name another live worker holds is refused (leases are held in a worker's name)."""
    from rivers.distributed.connection import check_reachable, connect
    from rivers.distributed.worker import Worker
    from rivers.exceptions import ConfigurationError
    from rivers.queues import keys

    if args.name:
        check_reachable(url)
        client = connect(url)
        try:
            if client.exists(keys.worker_key(args.name)):
                raise ConfigurationError(f"a live worker is already named '{args.name}' "
                                         f"(key {keys.worker_key(args.name)}); choose another --name")
        finally:
            client.close()
    return Worker(url, args.executor, args.concurrency, args.burst, name=args.name)


def kill_pool(worker: Worker) -> None:
    """Leaving without Redis: the steps running here cannot report, and their processes go with the worker."""
    import signal

    for pid in worker.pool.worker_pids() if worker.pool is not None else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
