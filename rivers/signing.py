"""HMAC-SHA256 signatures for pickled payloads: no worker unpickles bytes it cannot verify.

The key is `RIVERS_SECRET` when set. Without it, the coordinator's process makes a random key of
its own and hands it to the pool processes it starts (their loky initializer calls `use_key`), so
closures still reach local workers but can never be accepted by a worker on another machine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from rivers import defaults
from rivers.exceptions import BadSignature

_process_key: bytes | None = None  # made on first use in a coordinator process without RIVERS_SECRET
_given_key: bytes | None = None  # handed to this worker process by the process that started it


def signing_key() -> bytes:
    """The key this process signs and verifies with."""
    global _process_key
    secret = os.environ.get(defaults.SECRET_ENV)
    if secret:
        return secret.encode()
    if _given_key is not None:
        return _given_key
    if _process_key is None:
        _process_key = secrets.token_bytes(32)
    return _process_key


def deployment_key() -> bytes | None:
    """`RIVERS_SECRET`, shared by every coordinator and worker of a deployment; None when unset (Redis trusted)."""
    secret = os.environ.get(defaults.SECRET_ENV)
    return secret.encode() if secret else None


def use_key(key: bytes | None) -> None:
    """Adopt the key of the process that started this one (a pool worker's initializer)."""
    global _given_key
    _given_key = key


def sign(data: bytes, key: bytes | None = None) -> str:
    return hmac.new(key or signing_key(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, signature: str, key: bytes | None = None) -> None:
    """Raise BadSignature unless `signature` is the HMAC of `data` under the key."""
    expected = sign(data, key)
    if not hmac.compare_digest(expected, signature):
        raise BadSignature(
            "signature of a pickled payload does not verify; workers on other machines need the same RIVERS_SECRET"
        )
