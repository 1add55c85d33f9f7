"""`rivers-worker`: consumes a step queue (distributed mode) or runs one step in a pod."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rivers.cli import DISTRIBUTED_UNAVAILABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rivers-worker", description="Run rivers steps taken from Redis.")
    parser.add_argument("--executor", required=True, choices=["parallel", "kubernetes"], help="the queue to consume")
    parser.add_argument("--concurrency", type=int, metavar="N", help="processes in the loky pool (parallel)")
    parser.add_argument("--step", metavar="STEP_ID", help="the one step a pod runs (kubernetes)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.executor == "kubernetes" and not args.step:
        parser.error("--executor kubernetes needs --step STEP_ID")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    print(f"rivers-worker: error: {DISTRIBUTED_UNAVAILABLE}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
