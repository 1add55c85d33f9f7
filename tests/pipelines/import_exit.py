"""A step whose module ends the process importing it with os._exit(3), in rivers-worker processes only.

Armed by IMPORT_CRASH_ARMED=1 in the environment of the rivers-worker a test starts (its pool processes
inherit it); the test process imports this module harmlessly to build its repository. The process dies
before the import finishes, so every attempt imports the module again in a fresh pool process.
"""

from __future__ import annotations

import os

import rivers as rs

if os.environ.get("IMPORT_CRASH_ARMED") == "1":
    os._exit(3)


@rs.Asset(retry=rs.RetryPolicy(max_retries=1))
def import_exit(upstream: int) -> int:
    return upstream + 1
