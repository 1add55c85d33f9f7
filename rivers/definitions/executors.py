"""Executor values: where a step runs (API.md §1)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import ClassVar, TypeAlias

from rivers.exceptions import ConfigurationError

EXECUTOR_KEYS = ("in_process", "parallel", "kubernetes")


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Executor:
    """Base of the executor values; build them with the static factories."""

    key: ClassVar[str]
    InProcess: ClassVar[type[InProcess]]
    Parallel: ClassVar[type[Parallel]]
    Kubernetes: ClassVar[type[Kubernetes]]

    @staticmethod
    def in_process() -> _InProcess:
        return InProcess()

    @staticmethod
    def parallel(max_workers: int | None = None, max_async_concurrent: int | None = None) -> _Parallel:
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, got {max_workers}")
        if max_async_concurrent is not None and max_async_concurrent < 1:
            raise ConfigurationError(f"max_async_concurrent must be at least 1, got {max_async_concurrent}")
        return Parallel(max_workers or available_cpus(), max_async_concurrent)

    @staticmethod
    def kubernetes(
        worker_image: str | None = None,
        *,
        max_concurrent_steps: int | None = None,
        namespace: str | None = None,
        service_account: str = "rivers-executor",
        worker_cpu: str = "500m",
        worker_memory: str = "512Mi",
    ) -> _Kubernetes:
        from rivers.kubernetes.quantity import parse_cpu, parse_memory

        for name, parse, value in (("worker_cpu", parse_cpu, worker_cpu), ("worker_memory", parse_memory,
                                                                             worker_memory)):
            try:
                parse(value)
            except ConfigurationError as exc:
                raise ConfigurationError(f"Executor.kubernetes({name}=...): {exc}") from None
        if max_concurrent_steps is not None and max_concurrent_steps < 1:
            raise ConfigurationError(f"max_concurrent_steps must be at least 1, got {max_concurrent_steps}")
        return Kubernetes(
            worker_image, max_concurrent_steps, namespace, service_account, worker_cpu, worker_memory
        )

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)  # type: ignore[arg-type]
                 if getattr(self, f.name) is not None]
        return f"Executor.{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class InProcess(Executor):
    key: ClassVar[str] = "in_process"


@dataclass(frozen=True, repr=False)
class Parallel(Executor):
    max_workers: int
    max_async_concurrent: int | None = None
    key: ClassVar[str] = "parallel"


@dataclass(frozen=True, repr=False)
class Kubernetes(Executor):
    worker_image: str | None = None
    max_concurrent_steps: int | None = None
    namespace: str | None = None
    service_account: str = "rivers-executor"
    worker_cpu: str = "500m"
    worker_memory: str = "512Mi"
    key: ClassVar[str] = "kubernetes"


Executor.InProcess = InProcess
Executor.Parallel = Parallel
Executor.Kubernetes = Kubernetes
# Inside Executor's body these names mean its class attributes; the factories' annotations use these.
_InProcess: TypeAlias = InProcess
_Parallel: TypeAlias = Parallel
_Kubernetes: TypeAlias = Kubernetes


def executor_from_key(key: str) -> Executor:
    """The default executor value for a metadata/config key."""
    if key == "in_process":
        return Executor.in_process()
    if key == "parallel":
        return Executor.parallel()
    if key == "kubernetes":
        return Executor.kubernetes()
    raise ConfigurationError(f"Unknown executor in rivers/executor metadata: '{key}'")
