"""A step whose module raises SystemExit(3) when imported, in rivers-worker processes only.

Armed by IMPORT_CRASH_ARMED=1 in the environment of the rivers-worker a test starts; see import_exit. A
failed import leaves nothing in sys.modules, so every attempt imports the module (and exits) again.
"""

from __future__ import annotations

import os
import sys

import rivers as rs

if os.environ.get("IMPORT_CRASH_ARMED") == "1":
    sys.exit(3)


@rs.Asset(retry=rs.RetryPolicy(max_retries=1))
def import_sysexit(upstream: int) -> int:
    return upstream + 1
