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
    parser.add_argument("--concurrency", type=int, metavar="N", help="processes in the loky pool (parallel)")
    parser.add_argument("--redis-url", metavar="URL", help=f"default: ${defaults.REDIS_URL_ENV}")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--step", metavar="STEP_ID", help="the one step a pod runs (kubernetes)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.step and args.executor != "kubernetes":
        parser.error("--step is for step pods: --executor kubernetes --step JOB_ID")
    if args.executor == "kubernetes" and not args.step:
        print("rivers-worker: error: the pod launcher (--executor kubernetes without --step) is not available "
              "in this version of rivers", file=sys.stderr)
        return 2
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

            return StepPod(url, args.step).run()
        from rivers.distributed.worker import Worker

        return Worker(url, args.executor, args.concurrency, args.burst).run()
    except (ConfigurationError, ExecutionError) as exc:
        print(f"rivers-worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
