"""Keywords of rivers 0.6 features this rivers does not implement: accepted, refused only when used.

The README (Compatibility) promises that the keyword arguments of partitions, schedules, sensors,
automation conditions, backfills, concurrency pools, run queues and backends and storage backends are
accepted where rivers 0.6 has them: given their empty value (None, [], {}) they do nothing; given
anything else they raise `NotImplementedError` naming the keyword and the feature.
"""

from __future__ import annotations

from typing import Any

# keyword -> the feature it belongs to, as the README names it
FEATURE_OF: dict[str, str] = {
    "partitions_def": "partitions",
    "partition_defs": "partitions",
    "partition_key": "partitions",
    "partition": "partitions",
    "partition_mapping": "partitions",
    "schedules": "schedules",
    "sensors": "sensors",
    "automation_condition": "automation conditions",
    "backfill_strategy": "backfills",
    "pool": "concurrency pools",
    "pool_slots": "concurrency pools",
    "pool_limits": "concurrency pools",
    "run_queue": "run queues",
    "run_backend": "run backends",
    "storage": "storage backends",
}


def is_unset(value: Any) -> bool:
    """None or an empty container: what a caller passes to say "not used"."""
    return value is None or (isinstance(value, (list, tuple, dict, set, frozenset)) and not value)


def unsupported_message(owner: str, key: str) -> str:
    """One sentence naming the keyword (as `owner(key=...)`) and the feature it belongs to."""
    feature = FEATURE_OF.get(key)
    what = f": {feature} are" if feature is not None else " is"
    return f"{owner}({key}=...){what} not supported by this rivers (see README, Compatibility)"


def refuse_if_used(owner: str, **values: Any) -> None:
    """Raise NotImplementedError for the first keyword given a value other than None, [] or {}."""
    for key, value in values.items():
        if not is_unset(value):
            raise NotImplementedError(unsupported_message(owner, key))
