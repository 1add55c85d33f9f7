"""`rivers-coordinator --repo MODULE[:ATTR]`: the daemon that serves submitted runs (distributed mode)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rivers.cli import DISTRIBUTED_UNAVAILABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rivers-coordinator",
        description="Serve runs submitted through Redis, resume interrupted ones, launch step pods.",
    )
    parser.add_argument("--repo", required=True, metavar="MODULE[:ATTR]", help="the CodeRepository to serve")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print(f"rivers-coordinator: error: {DISTRIBUTED_UNAVAILABLE}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
