"""`rivers-coordinator --repo MODULE[:ATTR]`: the daemon that serves submitted runs (distributed mode)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rivers import defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rivers-coordinator",
        description="Serve runs submitted through Redis, resume interrupted ones, launch step pods.",
    )
    parser.add_argument("--repo", required=True, metavar="MODULE[:ATTR]", help="the CodeRepository to serve")
    parser.add_argument("--redis-url", metavar="URL", help=f"default: ${defaults.REDIS_URL_ENV}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rivers.cli import UsageError
    from rivers.cli.main import load_repository
    from rivers.distributed.connection import redis_url
    from rivers.exceptions import ConfigurationError, ExecutionError

    url = redis_url(args.redis_url)
    if url is None:
        print(f"rivers-coordinator: error: needs --redis-url or ${defaults.REDIS_URL_ENV}", file=sys.stderr)
        return 2
    import os

    os.environ[defaults.REDIS_URL_ENV] = url  # the runs it serves dispatch through this Redis
    from rivers.distributed.daemon import CoordinatorDaemon

    try:
        return CoordinatorDaemon(url, load_repository(args.repo)).serve()
    except (UsageError, ConfigurationError, ExecutionError) as exc:
        print(f"rivers-coordinator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
