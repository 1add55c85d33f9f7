"""What forged jobs and reports name (tests/faults/test_forged_jobs.py): everything here leaves a marker file.

Markers go to the directory in $FORGERY_MARKERS, one file per event and process (`<event>-<pid>`):
`import` when this module is imported, `pickle` when a planted pickle calling `write_marker` is loaded,
`setup` when `MarkerResource` is set up, `ran` when `forged_asset` runs.

The test process never imports this module: the tests name it by string only, so that "it was never
imported here" (`sys.modules`) can be asserted.
"""

from __future__ import annotations

import os
from pathlib import Path

import rivers as rs

MARKERS_ENV = "FORGERY_MARKERS"


def write_marker(event: str) -> str:
    """Leave `<event>-<pid>` in $FORGERY_MARKERS; a planted pickle's REDUCE calls this."""
    directory = os.environ.get(MARKERS_ENV)
    if directory:
        (Path(directory) / f"{event}-{os.getpid()}").write_text(event)
    return event


write_marker("import")  # the import side effect a forged definition Ref, resource or error type would trigger


class ForgedError(Exception):
    """The error type a forged report names: rebuilding it would import this module."""


class MarkerResource(rs.Resource):
    """A pydantic model whose setup() leaves a marker: a forged spec's resource."""

    label: str = "forged"

    def setup(self) -> None:
        write_marker("setup")


@rs.Asset
def forged_asset() -> int:
    write_marker("ran")
    return 1
