"""What a step's pod asks for: image, namespace, service account and resources of one attempt (pure).

    Executor.kubernetes(worker_cpu, worker_memory, ...)  ──> per axis overridden by the asset's rs.Compute
        ──> escalated by RetryPolicy(escalate=ComputeEscalation(...)): times factor for each earlier attempt that
            failed for a reason in `on` (out of memory by default), never past max_memory / max_cpu
        ──> PodRequest, carried in the step's spec, read by the pod launcher without importing user code
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from pydantic import BaseModel

from rivers.definitions.executors import Kubernetes
from rivers.definitions.policies import Compute, ComputeEscalation, FailureReason
from rivers.kubernetes.quantity import format_cpu, format_memory, parse_cpu, parse_memory


class PodRequest(BaseModel, frozen=True):
    image: str | None = None  # None: the launcher's RIVERS_WORKER_IMAGE, else its own pod's image
    namespace: str | None = None  # None: the launcher's namespace
    service_account: str = "rivers-executor"
    cpu: str = "500m"
    memory: str = "512Mi"
    gpu: int | None = None


def pod_request(executor: Kubernetes, compute: Compute | None, escalation: ComputeEscalation | None,
                earlier_reasons: Sequence[str | FailureReason]) -> PodRequest:
    """The pod of the next attempt, given the reasons (FailureReason values) earlier attempts failed for."""
    cpu = _axis(compute.cpu if compute else None) or executor.worker_cpu
    memory = _axis(compute.memory if compute else None) or executor.worker_memory
    if escalation is not None:
        escalating = {reason.value for reason in escalation.on}
        grown = sum(1 for reason in earlier_reasons
                    if (reason.value if isinstance(reason, FailureReason) else reason) in escalating)
        if grown:
            memory = _grow_memory(memory, escalation.factor, grown, escalation.max_memory)
            if escalation.cpu_factor is not None:
                cpu = _grow_cpu(cpu, escalation.cpu_factor, grown, escalation.max_cpu)
    return PodRequest(image=executor.worker_image, namespace=executor.namespace,
                      service_account=executor.service_account, cpu=cpu, memory=memory,
                      gpu=int(compute.gpu) if compute and compute.gpu is not None else None)


def _axis(value: str | float | None) -> str | None:
    """A Compute axis as quantity text (`Compute(cpu=2)` means '2'); None or '' when unset."""
    return None if value is None or value == "" else str(value)


def _grow_memory(memory: str, factor: float, times: int, ceiling: str) -> str:
    """`memory` times factor**times; at the ceiling: the ceiling as written. A start above it stays as it is."""
    size, limit = parse_memory(memory), parse_memory(ceiling)
    if size >= limit:
        return memory
    grown = format_memory(math.floor(size * Fraction(factor) ** times))
    return ceiling if parse_memory(grown) >= limit else grown  # format_memory rounds up: never past the ceiling


def _grow_cpu(cpu: str, factor: float, times: int, ceiling: str | None) -> str:
    start = parse_cpu(cpu)
    millicores = math.floor(start * Fraction(factor) ** times)
    if ceiling is not None:
        millicores = min(millicores, parse_cpu(ceiling))
    return cpu if millicores <= start else format_cpu(millicores)  # a start above the ceiling stays as it is
