"""`rivers-worker`: consumes a step queue (distributed mode) or runs one step in a pod."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rivers import defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rivers-worker", description="Run rivers steps taken from Redis.")
    parser.add_argument("--executor", required=True, choices=["parallel", "kubernetes"], help="the queue to consume")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="parallel: step processes (default: CPUs); kubernetes launcher: step pods followed at "
                             f"once (default {defaults.LAUNCHER_MAX_PODS})")
    parser.add_argument("--redis-url", metavar="URL", help=f"default: ${defaults.REDIS_URL_ENV}")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--step", metavar="STEP_ID", help="the one step a pod runs (kubernetes)")
    launcher = parser.add_argument_group("pod launcher (--executor kubernetes without --step)")
    launcher.add_argument("--namespace", metavar="NS",
                          help="where steps' Jobs go unless their executor names one (default: the launcher's own "
                               "namespace, else the kubeconfig context's, else 'default')")
    launcher.add_argument("--kubeconfig", metavar="FILE",
                          help="default: the in-cluster service account in a pod, else $KUBECONFIG or ~/.kube/config")
    launcher.add_argument("--start-timeout", type=float, metavar="S", default=defaults.POD_START_TIMEOUT_S,
                          help="a step pod not running by then fails: 'pod never started: <reason>' "
                               f"(default {defaults.POD_START_TIMEOUT_S:g})")
    launcher.add_argument("--redis-secret", metavar="NAME", default="rivers-redis",
                          help="the Secret whose key 'url' step pods read RIVERS_REDIS_URL from (default rivers-redis)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.step and args.executor != "kubernetes":
        parser.error("--step is for step pods: --executor kubernetes --step JOB_ID")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    from rivers.distributed.connection import redis_url
    from rivers.exceptions import ConfigurationError, ExecutionError

    url = redis_url(args.redis_url)
    if url is None:
        print(f"rivers-worker: error: distributed mode needs --redis-url or ${defaults.REDIS_URL_ENV}", file=sys.stderr)
        return 2
    if os.getcwd() not in sys.path:  # steps are imported by module name, like `rivers materialize` does
        sys.path.insert(0, os.getcwd())
    try:
        if args.step:
            from rivers.distributed.step_pod import StepPod

            code = StepPod(url, args.step).run()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # at once: the step's slot frees when this pod has ended (no interpreter teardown)
        if args.executor == "kubernetes":
            from rivers.kubernetes.launcher import Launcher

            return Launcher(url, namespace=args.namespace, kubeconfig=args.kubeconfig, max_pods=args.concurrency,
                            start_timeout=args.start_timeout, redis_secret=args.redis_secret, burst=args.burst).run()
        from rivers.distributed.worker import Worker

        return Worker(url, args.executor, args.concurrency, args.burst).run()
    except (ConfigurationError, ExecutionError) as exc:
        print(f"rivers-worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
