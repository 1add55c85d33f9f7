"""What a step reports (StepResult, JSON-serialisable) and what a run returns (RunResult)."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

from rivers.definitions.metadata import MetadataDict
from rivers.definitions.policies import reason_of

StepStatus = Literal["succeeded", "failed"]


class StepError(BaseModel):
    """An exception as data: enough to name it, show it and rebuild its type elsewhere."""

    type: str
    module: str
    message: str
    traceback: str = ""
    infrastructure: bool = False  # the worker died or could not run the step at all
    reason: str = "error"  # a FailureReason value: error | out_of_memory | timeout | infrastructure | cancelled

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, infrastructure: bool = False, reason: str | None = None
    ) -> StepError:
        return cls(
            type=type(exc).__qualname__,
            module=type(exc).__module__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            infrastructure=infrastructure,
            reason=reason or reason_of(exc, infrastructure=infrastructure).value,
        )

    def summary(self) -> str:
        """`"<ExcType>: <message>"` with the bare class name (no `<locals>` or outer-class path)."""
        return f"{self.type.rpartition('.')[2]}: {self.message}"


class OutputResult(BaseModel):
    name: str
    status: StepStatus
    metadata: MetadataDict = {}  # MetadataValues; a tagged form in JSON, so types survive a worker
    data_version: str | None = None
    error: StepError | None = None
    fan_out_keys: list[str] | None = None  # a fan-out source: the instance keys of its items


class LogEntry(BaseModel):
    """A record of `context.log`, or captured stdout/stderr, from wherever the step ran."""

    logger: str
    level: str
    message: str
    created: float


class StepResult(BaseModel):
    """The report of one attempt of one step."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    step_key: str
    attempt: int
    status: StepStatus
    outputs: list[OutputResult]
    error: StepError | None = None
    started_at: float = 0.0
    duration_s: float = 0.0
    pid: int = 0
    logs: list[LogEntry] = []
    _exception: BaseException | None = PrivateAttr(default=None)

    @classmethod
    def failed(
        cls, run_id: str, step_key: str, attempt: int, outputs: Iterable[str], exc: BaseException, *,
        infrastructure: bool = False, reason: str | None = None,
    ) -> StepResult:
        """The report of an attempt that failed before (or outside) the step runtime: every output fails."""
        error = StepError.from_exception(exc, infrastructure=infrastructure, reason=reason)
        return cls(
            run_id=run_id, step_key=step_key, attempt=attempt, status="failed",
            outputs=[OutputResult(name=name, status="failed", error=error) for name in outputs],
            error=error, pid=os.getpid(),
        ).with_exception(exc)

    @property
    def exception(self) -> BaseException | None:
        """The live exception when the step ran in this process (or was rebuilt from a worker)."""
        return self._exception

    def with_exception(self, exc: BaseException | None) -> StepResult:
        self._exception = exc
        return self


@dataclass
class RunResult:
    """The outcome of a run (API.md §4)."""

    success: bool
    run_id: str
    materialized_assets: list[str] = field(default_factory=list)
    failed_assets: list[tuple[str, str]] = field(default_factory=list)
    step_results: dict[str, StepResult] = field(default_factory=dict, repr=False)


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""
