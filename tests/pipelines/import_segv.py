"""A step whose module crashes the process importing it (a NULL read: SIGSEGV), in rivers-worker processes only.

Armed by IMPORT_CRASH_ARMED=1 in the environment of the rivers-worker a test starts; see import_exit.
"""

from __future__ import annotations

import ctypes
import os

import rivers as rs

if os.environ.get("IMPORT_CRASH_ARMED") == "1":
    ctypes.string_at(0)  # reads address 0: the kernel sends SIGSEGV


@rs.Asset(retry=rs.RetryPolicy(max_retries=1))
def import_segv(upstream: int) -> int:
    return upstream + 1
