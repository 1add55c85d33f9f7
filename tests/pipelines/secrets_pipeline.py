"""A pipeline whose resource and IO handler have secret fields (tests/e2e/test_secrets_in_redis.py).

Each step reports a SHA-256 of the secrets it was given, never the secrets themselves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from obstore.store import LocalStore
from pydantic import BaseModel, Field, SecretBytes, SecretStr

import rivers as rs


def digest(value: str | bytes) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


class Creds(BaseModel):
    api_key: SecretStr = Field(SecretStr(""), json_schema_extra={"env": "SECRETS_TEST_API_KEY"})


class Vault(rs.Resource):
    password: SecretStr
    pin: SecretBytes | None = None
    creds: Creds = Creds()


class TokenHandler(rs.PickleIOHandler):
    """Pickles values, and says in each output's metadata which token it was given."""

    token: SecretStr = SecretStr("")

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        super().handle_output(context, obj)
        context.add_output_metadata({"token_sha256": digest(self.token.get_secret_value())})


@rs.Asset
def uses_secret(vault: Vault) -> dict[str, str | None]:
    return {
        "password": digest(vault.password.get_secret_value()),
        "pin": digest(vault.pin.get_secret_value()) if vault.pin is not None else None,
        "api_key": digest(vault.creds.api_key.get_secret_value()),
    }


@rs.Asset
def downstream(uses_secret: dict[str, str | None]) -> int:
    return len(uses_secret)


def make_repo(directory: str | Path, password: str, pin: bytes | None, api_key: str, token: str) -> rs.CodeRepository:
    store = Path(directory) / "store"
    store.mkdir(parents=True, exist_ok=True)
    vault = Vault(password=SecretStr(password), pin=SecretBytes(pin) if pin is not None else None,
                  creds=Creds(api_key=SecretStr(api_key)))
    return rs.CodeRepository([uses_secret, downstream],
                             default_io_handler=TokenHandler(LocalStore(str(store)), token=SecretStr(token)),
                             resources={"vault": vault})
