"""The public errors of rivers (API.md §8) and a few internal ones."""

from __future__ import annotations


class AssetDefinitionError(Exception):
    """An asset is defined or used wrongly."""


class AssetNotFoundError(Exception):
    """A selection names an asset the repository does not have."""


class AssetOutputValidationError(Exception):
    """A value contradicts its function's return annotation."""


class ConfigurationError(Exception):
    """Configuration (executors, resources, IO handlers, run config) is invalid."""


class ExecutionError(Exception):
    """A run or step could not execute."""


class GraphValidationError(Exception):
    """The asset graph is invalid (cycles, unresolved inputs, bad jobs)."""


class DuplicateNameError(GraphValidationError, AssetDefinitionError):
    """Two definitions register under one name: rivers 0.6 raises AssetDefinitionError, API.md a graph error."""


class InvalidMetadataError(Exception):
    """A metadata value cannot be encoded as a MetadataValue (a malformed URL, say)."""


class NodeNotFoundError(Exception):
    """A node name is unknown to the repository."""


class TaskDefinitionError(Exception):
    """A task is defined or used wrongly."""


class SpecError(ExecutionError):
    """A step spec could not be turned back into live objects (names the step)."""


class WorkerLost(ExecutionError):
    """The process running a step died; an infrastructure failure."""


class PodFailed(WorkerLost):
    """A step's pod ended without reporting it: killed, never started, or deleted (an infrastructure failure)."""


class OutOfMemory(PodFailed, MemoryError):
    """A step's pod went past its memory limit and was OOMKilled."""


class BadSignature(ExecutionError):
    """A pickled payload's HMAC did not verify; it is never unpickled."""


class RefusedJob(ExecutionError):
    """A job on a queue that a worker will not run: unsigned, mis-signed, too large or not a rivers step."""


class FencedOut(BaseException):
    """This coordinator no longer owns the run it was driving (another one took it over): it stands down."""


class StaleAttempt(ExecutionError):
    """An attempt lost its lease (its worker paused or was cut off past it): it may not write outputs."""


__all__ = [
    "AssetDefinitionError",
    "AssetNotFoundError",
    "AssetOutputValidationError",
    "ConfigurationError",
    "ExecutionError",
    "GraphValidationError",
    "InvalidMetadataError",
    "NodeNotFoundError",
    "TaskDefinitionError",
]
