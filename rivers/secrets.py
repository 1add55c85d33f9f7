"""Secret fields of resources and IO handlers never travel in a step spec in clear.

A `SecretStr` / `SecretBytes` field (nested models, lists and dicts included) leaves the coordinator as a
`SecretSpec`: where it sits in the object, the environment variable a worker reads it from and, sealed with
AES-256-GCM, its value for whoever holds the key. The process that rebuilds the object resolves each one:

1. the sealed value, if this process holds its key:
   - by default the key is derived from this process tree's multiprocessing authkey, which only the
     coordinator's own step processes (the embedded parallel pool) share: in Redis it opens for nobody;
   - with `RIVERS_SECRETS_IN_SPECS=encrypted` on the coordinator it is derived from `RIVERS_SECRET` (HKDF-SHA256),
     so every worker that has the deployment's `RIVERS_SECRET` opens it and needs no variable per secret;
2. else the worker's own environment variable, named by `env_name`:
   - `Field(json_schema_extra={"env": "PG_PASSWORD"})` on the field: that name;
   - a resource: `RIVERS_SECRET_<RESOURCE KEY>__<FIELD>`, e.g. resource `db`, field `password`:
     `RIVERS_SECRET_DB__PASSWORD`;
   - an IO handler: `RIVERS_SECRET_<HANDLER CLASS NAME>__<FIELD>`, e.g. `RIVERS_SECRET_S3HANDLER__TOKEN`;
   a nested field adds `__<FIELD>` (or `__<INDEX>`, `__<KEY>`) per level, upper-cased, any other character `_`;
3. else the step fails with one SpecError naming the resource or handler, the field and the variable.

An empty secret has nothing to hide and travels as it is.
"""

from __future__ import annotations

import base64
import functools
import json
import multiprocessing
import os
import re
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

from rivers import defaults
from rivers.exceptions import ConfigurationError, SpecError

MODE_ENV = "RIVERS_SECRETS_IN_SPECS"  # on the coordinator: "env" (the default) or "encrypted"
MODES = ("env", "encrypted")
ENV_PREFIX = "RIVERS_SECRET_"
_DEPLOYMENT_INFO = b"rivers: secret fields in step specs, deployment key v1"
_PROCESS_INFO = b"rivers: secret fields in step specs, process-tree key v1"
_NONCE_BYTES = 12

Path = tuple[str | int, ...]


class SecretSpec(BaseModel, frozen=True):
    """One secret field of a travelling object, in place of its value (which is null in the JSON)."""

    path: Path  # field names and dict keys (str), list indices (int)
    env: str  # the variable a worker reads it from
    sealed: str | None = None  # base64(nonce + AES-GCM ciphertext); None for no sealed copy
    key: Literal["process", "deployment"] | None = None  # what sealed it


class SecretsConfigurationError(SpecError, ConfigurationError):
    """The coordinator cannot send secrets the way it is configured to (fails the step that needs it)."""


# -- names ---------------------------------------------------------------------------------------


def _part(value: str | int) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", str(value).upper())


def env_name(owner: str, path: Path, explicit: tuple[str, int] | None = None) -> str:
    """The variable of the secret at `path` of the resource key / handler class `owner`.

    `explicit` is a field's own name for it and the length of the path at that field.
    """
    if explicit is not None:
        name, depth = explicit
        return name + "".join(f"__{_part(p)}" for p in path[depth:])
    return ENV_PREFIX + _part(owner) + "".join(f"__{_part(p)}" for p in path)


def field_label(path: Path) -> str:
    """`creds.password`, `tokens[0]`: how a message names a field."""
    label = ""
    for part in path:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else part)
    return label


# -- keys and sealing ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _aead(material: bytes, info: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
    return AESGCM(key)


def _deployment_aead() -> AESGCM | None:
    secret = os.environ.get(defaults.SECRET_ENV)
    return _aead(secret.encode(), _DEPLOYMENT_INFO) if secret else None


def _process_aead() -> AESGCM:
    # Inherited by the processes multiprocessing/loky start from this one (the embedded pool), random elsewhere.
    return _aead(bytes(multiprocessing.current_process().authkey), _PROCESS_INFO)


def _aad(env: str, path: Path) -> bytes:
    """Binds a sealed value to its field: moved to another field, it does not open."""
    return json.dumps(["rivers-secret", env, list(path)]).encode()


def _seal(aead: AESGCM, value: str, env: str, path: Path) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    return base64.b64encode(nonce + aead.encrypt(nonce, value.encode(), _aad(env, path))).decode()


def _open(aead: AESGCM, sealed: str, env: str, path: Path) -> str | None:
    try:
        data = base64.b64decode(sealed, validate=True)
        return aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], _aad(env, path)).decode()
    except (InvalidTag, ValueError):
        return None


def mode() -> str:
    """How this coordinator sends secrets; raises SecretsConfigurationError for a bad or unusable setting."""
    chosen = os.environ.get(MODE_ENV, "").strip().lower() or "env"
    if chosen not in MODES:
        raise SecretsConfigurationError(f"{MODE_ENV}={chosen!r}: expected one of {', '.join(MODES)}")
    if chosen == "encrypted" and not os.environ.get(defaults.SECRET_ENV):
        raise SecretsConfigurationError(
            f"{MODE_ENV}=encrypted needs {defaults.SECRET_ENV} (the key secrets are encrypted with, the same on "
            f"coordinators and workers); set it, or unset {MODE_ENV} to have workers read secrets from their "
            "environment")
    return chosen


# -- the coordinator's side ----------------------------------------------------------------------


def extract(obj: BaseModel, owner: str) -> tuple[Any, tuple[SecretSpec, ...]]:
    """A python-mode dump of `obj` with every non-empty secret replaced by null, and their SecretSpecs.

    `owner` is the resource key, or the IO handler's class name.
    """
    found: list[tuple[Path, tuple[str, int] | None, str]] = []
    dumped = _walk(obj.model_dump(round_trip=True), obj, (), None, None, found)
    if not found:
        return dumped, ()
    encrypted = mode() == "encrypted"
    aead = _deployment_aead() if encrypted else _process_aead()
    assert aead is not None  # mode() checked RIVERS_SECRET
    specs = []
    for path, explicit, value in found:
        env = env_name(owner, path, explicit)
        specs.append(SecretSpec(path=path, env=env, sealed=_seal(aead, value, env, path),
                                key="deployment" if encrypted else "process"))
    return dumped, tuple(specs)


def _walk(dumped: Any, live: Any, path: Path, field: FieldInfo | None, explicit: tuple[str, int] | None,
          found: list[tuple[Path, tuple[str, int] | None, str]]) -> Any:
    """`dumped` with its secrets replaced by None; `live` is the object it was dumped from, where known."""
    if isinstance(dumped, SecretStr | SecretBytes):
        secret = dumped.get_secret_value()
        text = secret.decode() if isinstance(secret, bytes) else secret  # JSON carries bytes as UTF-8 text
        if not text:
            return text
        found.append((path, explicit, text))
        return None
    if isinstance(dumped, dict):
        out = {}
        for key, value in dumped.items():
            child_live, child_field, child_explicit = None, field, explicit
            if isinstance(live, BaseModel):
                child_field = type(live).model_fields.get(key) if isinstance(key, str) else None
                child_live = getattr(live, key, None) if child_field is not None else None
                named = _explicit_env(child_field)
                if named is not None:
                    child_explicit = (named, len(path) + 1)
            elif isinstance(live, dict):
                child_live = live.get(key)
            out[key] = _walk(value, child_live, (*path, str(key)), child_field, child_explicit, found)
        return out
    if isinstance(dumped, list | tuple | set | frozenset):
        items = list(dumped)
        lives = list(live) if isinstance(live, list | tuple) and len(live) == len(items) else [None] * len(items)
        return [_walk(item, item_live, (*path, index), field, explicit, found)
                for index, (item, item_live) in enumerate(zip(items, lives, strict=True))]
    return dumped


def _explicit_env(field: FieldInfo | None) -> str | None:
    extra = field.json_schema_extra if field is not None else None
    name = extra.get("env") if isinstance(extra, dict) else None
    return name if isinstance(name, str) and name else None


# -- the worker's side ---------------------------------------------------------------------------


def resolve(secrets: tuple[SecretSpec, ...], label: str) -> tuple[str, ...]:
    """The value of each secret, in order; raises SpecError naming `label`, the field and the variable to set."""
    values = []
    for secret in secrets:
        value, why = _unsealed(secret)
        if value is None:
            value = os.environ.get(secret.env)
        if value is None:
            raise SpecError(
                f"{label}: secret field '{field_label(secret.path)}' is not set in this worker's environment: "
                f"set {secret.env}{why}")
        values.append(value)
    return tuple(values)


def _unsealed(secret: SecretSpec) -> tuple[str | None, str]:
    """The sealed value if this process can open it, else None and why not (for the message)."""
    if secret.sealed is None:
        return None, ""
    if secret.key == "process":  # opens only in the coordinator's own process tree; elsewhere the variable counts
        return _open(_process_aead(), secret.sealed, secret.env, secret.path), ""
    aead = _deployment_aead()
    if aead is None:
        return None, (f" (the coordinator sent it encrypted with {defaults.SECRET_ENV}, which this worker does not "
                      "have: or give it the coordinator's)")
    value = _open(aead, secret.sealed, secret.env, secret.path)
    if value is None:
        return None, (f" (the coordinator sent it encrypted, and this worker's {defaults.SECRET_ENV} does not "
                      "decrypt it: or give it the coordinator's)")
    return value, ""


def inject(config_json: str, secrets: tuple[SecretSpec, ...], values: tuple[str, ...]) -> str:
    """`config_json` with each secret's value back in its place."""
    if not secrets:
        return config_json
    data = json.loads(config_json)
    for secret, value in zip(secrets, values, strict=True):
        *parents, last = secret.path
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    return json.dumps(data)


def scrub(text: str, values: tuple[str, ...]) -> str:
    """`text` with every secret value masked (for error messages that leave the process)."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, "**********")
    return text
