"""The batch/v1 Job of one step attempt (API.md §11), as the plain dict the `kubernetes` client sends. Pure.

    name    rivers-step-<8 hex of the run id>-<8 hex of sha256(step key)>[-r<N> for attempt N >= 2]
    labels  rivers.io/run-id, rivers.io/step (sanitised key), rivers.io/attempt, rivers.io/component=step-worker
    annotations  rivers.io/job-id (the Redis job the pod takes over), rivers.io/step-key (the key as it is)
    pod     restartPolicy Never, the executor's service account, one container `step` running
            `rivers-worker --executor kubernetes --step <job id>`; requests = limits; Redis URL and RIVERS_SECRET
            from Secrets (never literals); non-root, no privilege escalation, no capabilities
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from rivers import defaults
from rivers.kubernetes.pod_request import PodRequest

RUN_ID_LABEL = "rivers.io/run-id"
STEP_LABEL = "rivers.io/step"
ATTEMPT_LABEL = "rivers.io/attempt"
COMPONENT_LABEL = "rivers.io/component"
STEP_COMPONENT = "step-worker"
STEP_PODS = f"{COMPONENT_LABEL}={STEP_COMPONENT}"  # the label selector of every step pod and Job
JOB_ID_ANNOTATION = "rivers.io/job-id"
STEP_KEY_ANNOTATION = "rivers.io/step-key"
CONTAINER = "step"
POD_NAME_ENV = "RIVERS_POD_NAME"


@dataclass(frozen=True)
class StepAttempt:
    """What names and runs one attempt's Job."""

    job_id: str  # the Redis job: the pod takes exactly this one over
    run_id: str
    step_key: str
    attempt: int


def job_name(run_id: str, step_key: str, attempt: int) -> str:
    run = re.sub(r"[^0-9a-f]", "", run_id.lower())[:8] or "0" * 8
    step = hashlib.sha256(step_key.encode()).hexdigest()[:8]
    return f"rivers-step-{run}-{step}" + (f"-r{attempt}" if attempt >= 2 else "")


def label_value(text: str) -> str:
    """A valid label value: characters outside [A-Za-z0-9-_.] -> '-', lowercased, <= 63, alphanumeric ends."""
    value = re.sub(r"[^A-Za-z0-9\-_.]", "-", text).lower()[:63]
    return re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", value)


def labels(step: StepAttempt) -> dict[str, str]:
    return {RUN_ID_LABEL: label_value(step.run_id), STEP_LABEL: label_value(step.step_key),
            ATTEMPT_LABEL: str(step.attempt), COMPONENT_LABEL: STEP_COMPONENT}


def resources(pod: PodRequest) -> dict[str, dict[str, str]]:
    amounts = {"cpu": pod.cpu, "memory": pod.memory}
    limits = dict(amounts)
    if pod.gpu:
        limits["nvidia.com/gpu"] = str(pod.gpu)
    return {"requests": amounts, "limits": limits}


def job_manifest(step: StepAttempt, pod: PodRequest, image: str, *, redis_secret: str = "rivers-redis",
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job of one attempt; `extra_env` passes the launcher's log settings on."""
    meta_labels = labels(step)
    annotations = {JOB_ID_ANNOTATION: step.job_id, STEP_KEY_ANNOTATION: step.step_key}
    env: list[dict[str, Any]] = [
        {"name": defaults.REDIS_URL_ENV, "valueFrom": {"secretKeyRef": {"name": redis_secret, "key": "url"}}},
        {"name": defaults.SECRET_ENV,
         "valueFrom": {"secretKeyRef": {"name": "rivers-secret", "key": "secret", "optional": True}}},
        {"name": "RIVERS_RUN_ID", "value": step.run_id},
        {"name": "RIVERS_STEP_ATTEMPT", "value": str(step.attempt)},
        {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": name, "value": value} for name, value in sorted((extra_env or {}).items())),
    ]
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["rivers-worker", "--executor", "kubernetes", "--step", step.job_id],
        "env": env,
        "resources": resources(pod),
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(step.run_id, step.step_key, step.attempt), "labels": meta_labels,
                     "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": defaults.STEP_JOB_TTL_S,
            "template": {
                "metadata": {"labels": meta_labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": pod.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                },
            },
        },
    }
