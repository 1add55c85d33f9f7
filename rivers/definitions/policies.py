"""Retry policies, backoff, hooks and compute requests (API.md §7)."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rivers.exceptions import ConfigurationError, WorkerLost


class RetryOn(enum.Enum):
    ALL = "all"
    TRANSIENT = "transient"


class FailureReason(enum.Enum):
    """Why an attempt failed; recorded on every failed attempt (`StepError.reason` holds its value)."""

    ERROR = "error"  # the step raised
    OUT_OF_MEMORY = "out_of_memory"  # its pod was OOMKilled
    TIMEOUT = "timeout"
    INFRASTRUCTURE = "infrastructure"  # its worker or pod died, never started, or was deleted
    CANCELLED = "cancelled"

    def __repr__(self) -> str:
        return f"FailureReason.{self.name}"

    __str__ = __repr__


class ComputeEscalation:
    """Grow a Kubernetes step's memory (and cpu) on each retry of an out-of-memory attempt, never past the ceilings.

    `on` lists the FailureReasons that escalate (default: OUT_OF_MEMORY). Elsewhere it is inert.
    """

    def __init__(self, *, max_memory: str, factor: float = 2.0, cpu_factor: float | None = None,
                 max_cpu: str | None = None, on: Sequence[FailureReason] | None = None) -> None:
        from rivers.kubernetes.quantity import parse_cpu, parse_memory

        _checked("ComputeEscalation(max_memory=...)", parse_memory, max_memory)
        if max_cpu is not None:
            _checked("ComputeEscalation(max_cpu=...)", parse_cpu, max_cpu)
        if factor < 1:
            raise ConfigurationError(f"ComputeEscalation factor must be at least 1.0, got {factor}")
        if cpu_factor is not None and cpu_factor < 1:
            raise ConfigurationError(f"ComputeEscalation cpu_factor must be at least 1.0, got {cpu_factor}")
        for reason in on or ():
            if not isinstance(reason, FailureReason):
                raise TypeError(f"ComputeEscalation on= takes FailureReason values, got {reason!r}")
        self.max_memory = max_memory
        self.factor = factor
        self.cpu_factor = cpu_factor
        self.max_cpu = max_cpu
        self.on: tuple[FailureReason, ...] = (FailureReason.OUT_OF_MEMORY,) if on is None else tuple(on)

    def __repr__(self) -> str:
        shown = [f"factor={self.factor:g}", f"max_memory={self.max_memory!r}"]
        if self.cpu_factor is not None:
            shown.append(f"cpu_factor={self.cpu_factor:g}")
        if self.max_cpu is not None:
            shown.append(f"max_cpu={self.max_cpu!r}")
        return f"ComputeEscalation({', '.join(shown)})"


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (MemoryError, TimeoutError, WorkerLost)


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `n` (1-based): constant, linear or exponential, with jitter and a cap."""

    kind: str
    base: float
    initial: float = 0.0
    factor: float = 2.0
    jitter: float = 0.0
    max_delay: float | None = None

    @staticmethod
    def constant(delay: float, *, jitter: float = 0.0, max_delay: float | None = None) -> Backoff:
        return Backoff("constant", delay, jitter=jitter, max_delay=max_delay)

    @staticmethod
    def linear(step: float, *, initial: float = 0.0, jitter: float = 0.0, max_delay: float | None = None) -> Backoff:
        return Backoff("linear", step, initial=initial, jitter=jitter, max_delay=max_delay)

    @staticmethod
    def exponential(
        initial: float, *, factor: float = 2.0, jitter: float = 0.0, max_delay: float | None = None
    ) -> Backoff:
        return Backoff("exponential", initial, factor=factor, jitter=jitter, max_delay=max_delay)

    def delay(self, retry_number: int) -> float:
        if self.kind == "constant":
            delay = self.base
        elif self.kind == "linear":
            delay = self.initial + self.base * retry_number
        else:
            delay = self.base * self.factor ** (retry_number - 1)
        if self.jitter:
            delay += random.uniform(0, self.jitter * delay)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return max(0.0, delay)


class RetryPolicy:
    """Run a failing step again, at most `1 + max_retries` times in all."""

    def __init__(
        self,
        max_retries: int = 1,
        *,
        backoff: Backoff | None = None,
        retry_on: RetryOn | Sequence[type[BaseException]] | None = None,
        escalate: ComputeEscalation | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if retry_on is not None and not isinstance(retry_on, RetryOn):
            for item in retry_on:
                if not (isinstance(item, type) and issubclass(item, BaseException)):
                    raise TypeError(f"retry_on must list exception classes, got {item!r}")
            retry_on = tuple(retry_on)
        self.max_retries = max_retries
        self.backoff = backoff
        self.retry_on: RetryOn | tuple[type[BaseException], ...] = retry_on or RetryOn.ALL
        if escalate is not None and not isinstance(escalate, ComputeEscalation):
            raise TypeError(f"escalate must be a ComputeEscalation, got {escalate!r}")
        self.escalate = escalate

    def retries(self, error_type: type[BaseException] | None) -> bool:
        """Whether an error of this type is worth another attempt."""
        if self.retry_on is RetryOn.ALL:
            return True
        classes = TRANSIENT_ERRORS if self.retry_on is RetryOn.TRANSIENT else self.retry_on
        return error_type is not None and issubclass(error_type, classes)

    def delay(self, retry_number: int) -> float:
        return self.backoff.delay(retry_number) if self.backoff else 0.0

    def __repr__(self) -> str:
        escalate = f", escalate={self.escalate!r}" if self.escalate is not None else ""
        return (f"RetryPolicy(max_retries={self.max_retries}, backoff={self.backoff!r}, retry_on={self.retry_on!r}"
                f"{escalate})")


@dataclass
class HookContext:
    """What a hook callable receives."""

    asset_name: str
    run_id: str
    output: Any = None
    error: BaseException | None = None
    metadata: dict[str, Any] | None = None
    config: Any = None


@dataclass(frozen=True)
class Hook:
    """A callable run after a step succeeded or failed; errors in it are logged, never fatal."""

    on: str
    fn: Callable[[HookContext], Any]

    @staticmethod
    def success(fn: Callable[[HookContext], Any]) -> Hook:
        return Hook("success", fn)

    @staticmethod
    def failure(fn: Callable[[HookContext], Any]) -> Hook:
        return Hook("failure", fn)


@dataclass(frozen=True)
class Compute:
    """Per-step pod resources under Kubernetes."""

    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None

    def __post_init__(self) -> None:
        from rivers.kubernetes.quantity import parse_cpu, parse_memory

        if self.cpu is not None:
            _checked("Compute(cpu=...)", parse_cpu, self.cpu)
        if self.memory is not None:
            _checked("Compute(memory=...)", parse_memory, self.memory)
        if self.gpu is not None and (not isinstance(self.gpu, int) or self.gpu < 0):
            raise ConfigurationError(f"Compute(gpu=...) must be a whole number of GPUs, got {self.gpu!r}")


def _checked(what: str, parse: Callable[[str], int], value: Any) -> None:
    """A Kubernetes quantity, or a ConfigurationError naming the argument it was given as."""
    try:
        parse(str(value))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
