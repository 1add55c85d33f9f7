"""Retry policies, backoff, hooks and compute requests (API.md §7)."""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from rivers.exceptions import AssetDefinitionError, ConfigurationError, WorkerLost


class RetryOn(enum.Enum):
    ALL = "all"
    TRANSIENT = "transient"

    def __repr__(self) -> str:
        return f"RetryOn.{self.name}"

    __str__ = __repr__


class FailureReason(enum.Enum):
    """Why an attempt failed; recorded on every failed attempt (`StepError.reason` holds its value)."""

    ERROR = "error"  # the step raised
    OUT_OF_MEMORY = "out_of_memory"  # its pod was OOMKilled, or the step raised MemoryError
    TIMEOUT = "timeout"  # the step raised TimeoutError (a deadline of its own passed)
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
TRANSIENT_REASONS = frozenset({FailureReason.OUT_OF_MEMORY, FailureReason.TIMEOUT, FailureReason.INFRASTRUCTURE})


def reason_of(exc: BaseException | None, *, infrastructure: bool = False) -> FailureReason:
    """The FailureReason of an attempt that raised `exc` (as rivers 0.6 records it), or that never ran."""
    if infrastructure:
        return FailureReason.INFRASTRUCTURE
    if isinstance(exc, MemoryError):
        return FailureReason.OUT_OF_MEMORY
    if isinstance(exc, TimeoutError):
        return FailureReason.TIMEOUT
    return FailureReason.ERROR


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `n` (1-based): constant, linear, exponential or a fixed schedule, with jitter and a cap.

    `jitter` J in [0, 1] spreads the delay at random over delay·(1 ± J), as rivers does; `max_delay` caps the result,
    jitter included.
    """

    kind: str
    base: float
    initial: float = 0.0
    factor: float = 2.0
    jitter: float = 0.0
    max_delay: float | None = None
    schedule: tuple[float, ...] = ()  # Backoff.fixed: the delay before each retry; the last one repeats

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:  # NaN fails both comparisons
            shown = "NaN" if math.isnan(self.jitter) else self.jitter
            raise ConfigurationError(f"jitter must be between 0.0 and 1.0, got {shown}")
        if self.kind == "exponential" and not self.factor > 0:
            raise ConfigurationError(f"Backoff.exponential factor must be > 0, got {self.factor:g}")
        object.__setattr__(self, "schedule", tuple(self.schedule))  # a list after a trip through a spec's JSON

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

    @staticmethod
    def fixed(schedule: Sequence[float], *, jitter: float = 0.0) -> Backoff:
        """Wait `schedule[n-1]` seconds before retry `n`; retries past its end wait its last entry."""
        if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
            raise TypeError(f"Backoff.fixed takes a list of delays in seconds, got {type(schedule).__name__}")
        delays = tuple(_seconds(value) for value in schedule)
        if not delays:
            raise ConfigurationError("Backoff.fixed requires a non-empty schedule")
        return Backoff("fixed", delays[0], jitter=jitter, schedule=delays)

    def __repr__(self) -> str:
        """The call that builds it, as written (defaults left out)."""
        if self.kind == "fixed":
            shown = [f"[{', '.join(f'{d:g}' for d in self.schedule)}]"]
        else:
            shown = [f"{self.base:g}"]
        if self.kind == "linear" and self.initial:
            shown.append(f"initial={self.initial:g}")
        if self.kind == "exponential" and self.factor != 2.0:
            shown.append(f"factor={self.factor:g}")
        if self.jitter:
            shown.append(f"jitter={self.jitter:g}")
        if self.max_delay is not None:
            shown.append(f"max_delay={self.max_delay:g}")
        return f"Backoff.{self.kind}({', '.join(shown)})"

    def delay(self, retry_number: int) -> float:
        if self.kind == "constant":
            delay = self.base
        elif self.kind == "linear":
            delay = self.initial + self.base * retry_number
        elif self.kind == "fixed":
            delay = self.schedule[min(max(retry_number, 1), len(self.schedule)) - 1]
        else:
            delay = self.base * self.factor ** (retry_number - 1)
        if self.jitter:
            delay *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return max(0.0, delay)


def _seconds(value: Any) -> float:
    """One entry of a fixed schedule: a finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Backoff.fixed schedule entries must be numbers of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"Backoff.fixed schedule entries must be finite, got {value}")
    return float(value)


class RetryPolicy:
    """Run a failing step again, at most `1 + max_retries` times in all."""

    def __init__(
        self,
        max_retries: int = 1,
        *,
        backoff: Backoff | None = None,
        retry_on: RetryOn | Sequence[type[BaseException] | FailureReason] | None = None,
        escalate: ComputeEscalation | None = None,
    ) -> None:
        if not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be a whole number, got {max_retries!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff (Backoff.constant(...) and the like), got {backoff!r}")
        if retry_on is not None and not isinstance(retry_on, (RetryOn, list, tuple)):
            raise ConfigurationError("retry_on must be RetryOn.ALL, RetryOn.TRANSIENT, or a list of exception types "
                                     f"/ FailureReason values, got {retry_on!r}")
        if retry_on is not None and not isinstance(retry_on, RetryOn):
            for item in retry_on:
                exception_class = isinstance(item, type) and issubclass(item, BaseException)
                if not (exception_class or isinstance(item, FailureReason)):
                    raise TypeError(f"retry_on elements must be exception types or FailureReason values, got {item!r}")
            retry_on = tuple(retry_on)
        self.max_retries = int(max_retries)  # True is 1, as in rivers
        self.backoff = backoff
        # an empty list retries nothing (as in rivers): only None means the default, ALL
        self.retry_on: RetryOn | tuple[type[BaseException] | FailureReason, ...] = (
            RetryOn.ALL if retry_on is None else retry_on)
        if escalate is not None and not isinstance(escalate, ComputeEscalation):
            raise TypeError(f"escalate must be a ComputeEscalation, got {escalate!r}")
        self.escalate = escalate

    def retries(self, error_type: type[BaseException] | None, reason: str | None = None) -> bool:
        """Whether an attempt that failed with an error of this type, for this reason (a FailureReason value, as
        `StepError.reason` holds it), is worth another one."""
        if self.retry_on is RetryOn.ALL:
            return True
        if self.retry_on is RetryOn.TRANSIENT:
            classes: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
            reasons: frozenset[FailureReason] = TRANSIENT_REASONS
        else:
            classes = tuple(item for item in self.retry_on if isinstance(item, type))
            reasons = frozenset(item for item in self.retry_on if isinstance(item, FailureReason))
        return any(reason == known.value for known in reasons) or (
            error_type is not None and issubclass(error_type, classes))

    def delay(self, retry_number: int) -> float:
        return self.backoff.delay(retry_number) if self.backoff else 0.0

    def __repr__(self) -> str:
        shown = [f"max_retries={self.max_retries}"]  # as rivers shows it, then what differs from the defaults
        if self.backoff is not None:
            shown.append(f"backoff={self.backoff!r}")
        if isinstance(self.retry_on, tuple):
            listed = ", ".join(item.__qualname__ if isinstance(item, type) else repr(item) for item in self.retry_on)
            shown.append(f"retry_on=[{listed}]")
        elif self.retry_on is not RetryOn.ALL:
            shown.append(f"retry_on={self.retry_on!r}")
        if self.escalate is not None:
            shown.append(f"escalate={self.escalate!r}")
        return f"RetryPolicy({', '.join(shown)})"


ConfigT = TypeVar("ConfigT")


@dataclass
class HookContext(Generic[ConfigT]):
    """What a hook callable receives; `HookContext[MyConfig]` types `config`."""

    asset_name: str  # for a multi-asset: the output the hook fires for
    run_id: str
    output: Any = None  # the value written (success hooks)
    error: BaseException | None = None  # the exception (failure hooks)
    metadata: dict[str, Any] | None = None  # the asset's metadata and the output's; None when both are empty
    config: ConfigT | None = None

    @property
    def hook_type(self) -> str:
        """`"success"` or `"failure"`."""
        return "failure" if self.error is not None else "success"


HookFn = Callable[[HookContext[Any]], Any]


class Hook:
    """A callable run after a step succeeded (`Hook.Success`) or failed (`Hook.Failure`).

    Made with `Hook.success(fn)`, `@Hook.success` or `@Hook.success(name=...)`; errors in it are logged,
    never fatal. A hook made without a function is bound by calling it once with one.
    """

    __slots__ = ("_func", "_name")
    on: ClassVar[str]
    Success: ClassVar[type[Hook]]
    Failure: ClassVar[type[Hook]]

    def __init__(self, _func: HookFn | None, _name: str) -> None:
        if type(self) is Hook:
            raise TypeError("cannot create 'Hook' instances; use Hook.success(...) or Hook.failure(...)")
        if _func is not None and not callable(_func):
            raise TypeError(f"Hook.{self.on} needs a callable, got {type(_func).__name__}")
        if not isinstance(_name, str):
            raise TypeError(f"Hook name must be a str, got {type(_name).__name__}")
        self._func = _func
        self._name = _name

    @property
    def name(self) -> str:
        return self._name

    @property
    def fn(self) -> HookFn | None:
        """The bound function; None for a hook made with only a name."""
        return self._func

    def __call__(self, func: HookFn) -> Hook:
        """Bind a hook made with `name=` only (the decorator form) to its function."""
        if self._func is not None:
            raise AssetDefinitionError(
                f"Hook is already bound to a function and cannot be called as a decorator again: {self!r}"
            )
        return type(self)(func, self._name or _name_of(func))

    def __repr__(self) -> str:
        return f"Hook.{type(self).__name__}(name={self._name!r})"

    @staticmethod
    def success(func: HookFn | None = None, *, name: str | None = None) -> Hook:
        """A hook run after the step succeeded; `@Hook.success` or `@Hook.success(name=...)`."""
        return _make(Hook.Success, func, name)

    @staticmethod
    def failure(func: HookFn | None = None, *, name: str | None = None) -> Hook:
        """A hook run after the step failed for good (not on attempts that will be retried)."""
        return _make(Hook.Failure, func, name)


class _SuccessHook(Hook):
    __slots__ = ()
    on = "success"


class _FailureHook(Hook):
    __slots__ = ()
    on = "failure"


for _kind, _cls in (("Success", _SuccessHook), ("Failure", _FailureHook)):
    _cls.__name__, _cls.__qualname__ = _kind, f"Hook.{_kind}"  # pickled by reference as Hook.Success
    setattr(Hook, _kind, _cls)


def _name_of(func: Any) -> str:
    return str(getattr(func, "__name__", None) or type(func).__name__)


def _make(cls: type[Hook], func: HookFn | None, name: str | None) -> Hook:
    if func is None:
        return cls(None, "" if name is None else name)
    if not callable(func):
        raise TypeError(f"Hook.{cls.on} needs a callable, got {type(func).__name__}")
    return cls(func, _name_of(func) if name is None else name)


@dataclass(frozen=True)
class Compute:
    """Per-step pod resources under Kubernetes."""

    cpu: str | None = None
    memory: str | None = None
    gpu: int | str | None = None  # a whole number of GPUs: rivers takes "1", an int is accepted too; kept as int

    def __post_init__(self) -> None:
        from rivers.kubernetes.quantity import parse_cpu, parse_memory

        if self.cpu is not None:
            _checked("Compute(cpu=...)", parse_cpu, self.cpu)
        if self.memory is not None:
            _checked("Compute(memory=...)", parse_memory, self.memory)
        if self.gpu is not None:
            gpu = self.gpu.strip() if isinstance(self.gpu, str) else self.gpu
            if isinstance(gpu, str) and gpu.isdigit():
                gpu = int(gpu)
            if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
                raise ConfigurationError(f"Compute(gpu=...) must be a whole number of GPUs, got {self.gpu!r}")
            object.__setattr__(self, "gpu", gpu)

    def __repr__(self) -> str:
        shown = [f"{axis}={value!r}" for axis in ("cpu", "memory", "gpu") if (value := getattr(self, axis)) is not None]
        return f"Compute({', '.join(shown)})"


def _checked(what: str, parse: Callable[[str], int], value: Any) -> None:
    """A Kubernetes quantity, or a ConfigurationError naming the argument it was given as."""
    try:
        parse(str(value))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
