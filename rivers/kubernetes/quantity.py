"""Kubernetes resource quantities: parse `512Mi` / `1.5G` / `500m` / `2`, scale them, write them back."""

from __future__ import annotations

import math
import re

from rivers.exceptions import ConfigurationError

_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|[kMGTPE]i?|[KMGTPE]i)?$")


def _parse(text: str, what: str) -> float:
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ConfigurationError(f"{what} {text!r} is not a Kubernetes quantity (such as '512Mi', '2Gi', '500m', '2')")
    number, suffix = float(match.group(1)), match.group(2) or ""
    return number / 1000 if suffix == "m" else number * _SUFFIXES[suffix]


def parse_memory(text: str) -> int:
    """Bytes."""
    return math.ceil(_parse(text, "memory"))


def parse_cpu(text: str) -> int:
    """Millicores."""
    return math.ceil(_parse(text, "cpu") * 1000)


def format_memory(size: int) -> str:
    """The shortest exact binary form: 1073741824 -> '1Gi', 805306368 -> '768Mi'; else whole Mi, rounded up."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size) if size < 2**20 else f"{math.ceil(size / 2**20)}Mi"


def format_cpu(millicores: int) -> str:
    return f"{millicores // 1000}" if millicores % 1000 == 0 else f"{millicores}m"
