"""Kubernetes resource quantities: parse `512Mi` / `1.5G` / `500m` / `2` / `1e3`, scale them, write them back.

Arithmetic is exact (fractions, not floats): `4.03` cpu is 4030 millicores, not 4031.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from rivers.exceptions import ConfigurationError

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1), "m": Fraction(1, 1000),
    **{suffix: Fraction(10**power) for suffix, power in zip("kMGTPE", range(3, 19, 3), strict=True)},
    **{suffix + "i": Fraction(2**power) for suffix, power in zip("KMGTPE", range(10, 61, 10), strict=True)},
}
# <number><binary SI | decimal SI suffix | decimal exponent>, as Kubernetes writes them (no sign: never negative)
_QUANTITY = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([KMGTPE]i|[mkMGTPE])|[eE]([+-]?[0-9]+))?$")


def _parse(text: str, what: str) -> Fraction:
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ConfigurationError(f"{what} {text!r} is not a Kubernetes quantity (such as '512Mi', '2Gi', '500m', '2')")
    number, suffix, exponent = Fraction(match.group(1)), match.group(2) or "", match.group(3)
    if exponent is not None:
        return number * Fraction(10) ** int(exponent)
    return number * _SUFFIXES[suffix]


def parse_memory(text: str) -> int:
    """Bytes, rounded up."""
    return math.ceil(_parse(text, "memory"))


def parse_cpu(text: str) -> int:
    """Millicores, rounded up."""
    return math.ceil(_parse(text, "cpu") * 1000)


def format_memory(size: int) -> str:
    """The shortest exact binary form: 1073741824 -> '1Gi', 805306368 -> '768Mi'; else whole Mi, rounded up."""
    for power, suffix in ((60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        unit = 2**power
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size) if size < 2**20 else f"{-(-size // 2**20)}Mi"


def format_cpu(millicores: int) -> str:
    return f"{millicores // 1000}" if millicores % 1000 == 0 else f"{millicores}m"
