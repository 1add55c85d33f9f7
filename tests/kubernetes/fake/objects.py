"""What the API server knows about objects: kinds, errors as `Status`, validation (422), defaulting, selectors."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.utils.quantity import parse_quantity

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")  # pod phases


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A refused request, answered as a `Status` object with the same code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Kind:
    resource: str  # the URL plural, the key everything is stored under
    kind: str
    group: str
    fields: tuple[str, ...]  # what fieldSelector may use

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/v1" if self.group else "/api/v1"

    @property
    def qualified(self) -> str:  # as the API server names it in messages: pods, jobs.batch
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self.qualified} "{name}" not found',
                        {"name": name, "group": self.group, "kind": self.resource})


KINDS = {k.resource: k for k in (
    Kind("pods", "Pod", "", ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                             "spec.schedulerName", "spec.serviceAccountName", "status.phase", "status.podIP")),
    Kind("jobs", "Job", "batch", ("metadata.name", "metadata.namespace", "status.successful")),
    Kind("secrets", "Secret", "", ("metadata.name", "metadata.namespace", "type")),
)}


SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
FIELD_PATHS = re.compile(r"metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]"
                         r"|spec\.(nodeName|serviceAccountName)|status\.(podIP|hostIP)")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character")


class Causes(list[Obj]):
    """The field errors of one object, as a 422 `Status` lists them."""

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.append({"reason": "FieldValueInvalid", "field": path,
                     "message": f"Invalid value: {json.dumps(value)}: {detail}"})

    def required(self, path: str, detail: str = "") -> None:
        self.append({"reason": "FieldValueRequired", "field": path,
                     "message": "Required value" + (f": {detail}" if detail else "")})

    def name(self, path: str, name: Any, *, label: bool = False, max_len: int = 253) -> None:
        if not name:
            self.required(path, "name or generateName is required" if path == "metadata.name" else "")
        elif not isinstance(name, str) or not (DNS_LABEL if label else SUBDOMAIN).fullmatch(name):
            self.invalid(path, name, LABEL_MSG if label else SUBDOMAIN_MSG)
        elif len(name) > max_len:
            self.invalid(path, name, f"must be no more than {max_len} characters")

    def labels(self, path: str, labels: Any) -> None:
        for key, value in (labels or {}).items():
            prefix, _, name = key.rpartition("/")
            if (prefix and not SUBDOMAIN.fullmatch(prefix)) or not 0 < len(name) <= 63 \
                    or not LABEL_VALUE.fullmatch(name):
                self.invalid(path, key, "name part " + LABEL_VALUE_MSG.removeprefix("a valid label "))
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
                self.invalid(path, value, LABEL_VALUE_MSG if isinstance(value, str) and len(value) <= 63
                             else "must be no more than 63 characters")

    def error(self, kind: Kind, name: str) -> ApiError:
        text = "; ".join(f"{c['field']}: {c['message']}" for c in self)
        return ApiError(422, "Invalid", f'{kind.kind} "{name}" is invalid: {text}',
                        {"name": name, "group": kind.group, "kind": kind.kind, "causes": list(self)})


def _check_meta(causes: Causes, obj: Obj, max_name: int = 253) -> None:
    causes.name("metadata.name", obj["metadata"].get("name"), max_len=max_name)
    causes.labels("metadata.labels", obj["metadata"].get("labels"))


def _check_env(causes: Causes, c: Obj, path: str) -> None:
    for j, e in enumerate(c.get("env") or []):
        if not ENV_NAME.fullmatch(e.get("name") or ""):
            causes.invalid(f"{path}.env[{j}].name", e.get("name"), "a valid environment variable name must "
                           "consist of alphabetic characters, digits, '_', '-', or '.'")
        source = e.get("valueFrom") or {}
        if set(source) - {"secretKeyRef", "fieldRef"}:
            causes.invalid(f"{path}.env[{j}].valueFrom", source, "the fake API server supports only "
                           "secretKeyRef and fieldRef")
        ref = source.get("secretKeyRef")
        if ref is not None and not (ref.get("name") and ref.get("key")):
            causes.required(f"{path}.env[{j}].valueFrom.secretKeyRef", "name and key")
        if "fieldRef" in source and not FIELD_PATHS.fullmatch(source["fieldRef"].get("fieldPath", "")):
            causes.invalid(f"{path}.env[{j}].valueFrom.fieldRef.fieldPath", source["fieldRef"].get("fieldPath"),
                           "not a field path the fake kubelet supports")
    for j, src in enumerate(c.get("envFrom") or []):
        if not (src.get("secretRef") or {}).get("name"):
            causes.invalid(f"{path}.envFrom[{j}]", src, "the fake API server supports only secretRef")


def _check_resources(causes: Causes, c: Obj, path: str) -> None:
    resources = c.get("resources") or {}
    parsed: dict[str, dict[str, Any]] = {}
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            try:
                parsed.setdefault(section, {})[name] = parse_quantity(value)
            except ValueError:
                causes.invalid(f"{path}.resources.{section}[{name}]", value, "quantities must match the "
                               "regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            causes.invalid(f"{path}.resources.requests", resources["requests"][name],
                           f"must be less than or equal to {name} limit of {resources['limits'][name]}")


def _check_pod_spec(causes: Causes, spec: Obj, path: str, *, job: bool = False) -> None:
    containers = spec.get("containers") or []
    if not containers:
        causes.required(f"{path}.containers")
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        causes.name(f"{cpath}.name", c.get("name"), label=True, max_len=63)
        if c.get("name") in seen:
            causes.append({"reason": "FieldValueDuplicate", "field": f"{cpath}.name",
                           "message": f'Duplicate value: "{c["name"]}"'})
        seen.add(c.get("name"))
        if not c.get("image"):
            causes.required(f"{cpath}.image")
        _check_env(causes, c, cpath)
        _check_resources(causes, c, cpath)
    allowed = ("OnFailure", "Never") if job else ("Always", "OnFailure", "Never")
    restart = spec.get("restartPolicy")
    if restart is None and job:
        causes.required(f"{path}.restartPolicy", 'valid values: "OnFailure", "Never"')
    elif restart is not None and restart not in allowed:
        causes.append({"reason": "FieldValueNotSupported", "field": f"{path}.restartPolicy",
                       "message": f'Unsupported value: "{restart}": supported values: '
                                  + ", ".join(f'"{v}"' for v in allowed)})


def validate_pod(pod: Obj) -> Causes:
    causes = Causes()
    _check_meta(causes, pod)
    _check_pod_spec(causes, pod.get("spec") or {}, "spec")
    return causes


def validate_job(job: Obj) -> Causes:
    causes = Causes()
    _check_meta(causes, job, max_name=63)  # the name becomes the pods' job-name label value
    spec = job.get("spec") or {}
    template = spec.get("template")
    if not template:
        causes.required("spec.template")
        return causes
    causes.labels("spec.template.metadata.labels", (template.get("metadata") or {}).get("labels"))
    _check_pod_spec(causes, template.get("spec") or {}, "spec.template.spec", job=True)
    for name in ("backoffLimit", "ttlSecondsAfterFinished"):
        value = spec.get(name)
        if value is not None and (not isinstance(value, int) or value < 0):
            causes.invalid(f"spec.{name}", value, "must be greater than or equal to 0")
    for name in ("parallelism", "completions"):
        if spec.get(name) not in (None, 1):
            causes.invalid(f"spec.{name}", spec[name], "the fake job controller runs one pod at a time")
    return causes


def validate_secret(secret: Obj) -> Causes:
    causes = Causes()
    _check_meta(causes, secret)
    for section in ("data", "stringData"):
        for key, value in (secret.get(section) or {}).items():
            if not SECRET_KEY.fullmatch(key):
                causes.invalid(f"{section}[{key}]", key, "a valid config key must consist of alphanumeric "
                               "characters, '-', '_' or '.'")
            if section == "data":
                try:
                    base64.b64decode(value, validate=True)
                except (ValueError, TypeError):
                    causes.invalid(f"data[{key}]", "<secret>", "illegal base64 data")
    return causes


def _default_pod_spec(spec: Obj) -> None:
    for key, value in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                       ("dnsPolicy", "ClusterFirst"), ("schedulerName", "default-scheduler"),
                       ("serviceAccountName", "default"), ("securityContext", {}), ("enableServiceLinks", True)):
        spec.setdefault(key, value)
    spec["serviceAccount"] = spec["serviceAccountName"]
    for c in spec["containers"]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        tagged = ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest")
        c.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
        resources = c.setdefault("resources", {})
        if resources.get("limits"):  # requests default to limits, as in the API server
            resources["requests"] = {**resources["limits"], **(resources.get("requests") or {})}


def _qos_class(spec: Obj) -> str:
    resources = [c.get("resources") or {} for c in spec["containers"]]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(set(r.get("limits") or {}) >= {"cpu", "memory"} and all(
        parse_quantity(v) == parse_quantity((r.get("limits") or {}).get(k, "0"))
        for k, v in (r.get("requests") or {}).items()) for r in resources)
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: Obj) -> None:
    _default_pod_spec(pod["spec"])
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(pod["spec"])}


def default_job(job: Obj) -> None:
    meta, spec = job["metadata"], job["spec"]
    template_meta = spec["template"].setdefault("metadata", {})
    if not meta.get("labels") and template_meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    for key, value in (("backoffLimit", 6), ("parallelism", 1), ("completions", 1), ("suspend", False),
                       ("completionMode", "NonIndexed"), ("podReplacementPolicy", "TerminatingOrFailed")):
        spec.setdefault(key, value)
    uid, name = meta["uid"], meta["name"]
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), "batch.kubernetes.io/controller-uid": uid,
                               "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name}
    _default_pod_spec(spec["template"]["spec"])
    job["status"] = {}


def default_secret(secret: Obj) -> None:
    secret.setdefault("type", "Opaque")
    data = secret.setdefault("data", {})
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(value.encode()).decode()


VALIDATE = {"pods": validate_pod, "jobs": validate_job, "secrets": validate_secret}
DEFAULT = {"pods": default_pod, "jobs": default_job, "secrets": default_secret}


# ---------------------------------------------------------------------------------------------- selectors

_LABEL_TERM = re.compile(r"\s*(?:!\s*(?P<absent>[^\s!=,()]+)|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|!=|=)\s*"
                         r"(?P<value>[^\s!=,()]*)|\s(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*")


class Selector:
    """The namespace, labelSelector and fieldSelector of a list/watch request, as one predicate on objects."""

    def __init__(self, kind: Kind, namespace: str | None, labels: str = "", fields: str = "") -> None:
        self.kind, self.namespace = kind, namespace
        self.labels = [self._label_term(t) for t in re.split(r",(?![^()]*\))", labels) if t.strip()]
        self.fields = [self._field_term(t) for t in fields.split(",") if t.strip()]

    @staticmethod
    def _label_term(term: str) -> tuple[str, str, frozenset[str]]:
        m = _LABEL_TERM.fullmatch(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        if m["absent"]:
            return m["absent"], "!", frozenset()
        if m["setop"]:
            return m["key"], m["setop"], frozenset(v.strip() for v in m["values"].split(","))
        if m["op"]:
            return m["key"], "!=" if m["op"] == "!=" else "=", frozenset([m["value"]])
        return m["key"], "exists", frozenset()

    def _field_term(self, term: str) -> tuple[str, bool, str]:
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        if m[1] not in self.kind.fields:
            raise ApiError(400, "BadRequest", f"field label not supported: {m[1]}")
        return m[1], m[2] != "!=", m[3]

    def __call__(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        for key, op, values in self.labels:
            value = labels.get(key)
            ok = {"=": value in values, "!=": value not in values, "in": value in values,
                  "notin": value not in values, "exists": key in labels, "!": key not in labels}[op]
            if not ok:
                return False
        return all((field_value(obj, path) == value) == equal for path, equal, value in self.fields)


def field_value(obj: Obj, path: str) -> str:
    if path == "status.successful":  # jobs name status.succeeded so
        path = "status.succeeded"
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)

def set_condition(status: Obj, type_: str, value: str, reason: str | None = None,
                   message: str | None = None) -> None:
    conditions = status.setdefault("conditions", [])
    old = next((c for c in conditions if c["type"] == type_), None)
    new = {"type": type_, "status": value, "lastProbeTime": None,
           "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value else now()}
    new.update({k: v for k, v in (("reason", reason), ("message", message)) if v is not None})
    if old is None:
        conditions.append(new)
    else:
        conditions[conditions.index(old)] = new
