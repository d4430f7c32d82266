"""API keys over HTTP (admins): list, create, revoke.

A new key's secret is in the creation response only (with `Cache-Control: no-store`); the
catalog keeps its SHA-256, listings show its first characters, and nothing logs it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from modelyard.access import ApiKey, Principal
from modelyard.server.security import RegistryDep, require

router = APIRouter(prefix="/api/v1", tags=["admin"])
KeyAdmin = Annotated[Principal, Depends(require("keys"))]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, description="who or what holds the key: letters, digits, '.', '_', '@', '-'")
    role: str = Field(max_length=20, description="viewer, trainer, deployer, approver or admin")


class KeyOut(BaseModel):
    name: str
    role: str
    prefix: str = Field(description="the first characters of the secret, to tell keys apart")
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool


class CreatedKeyOut(KeyOut):
    key: str = Field(description="the secret: shown in this response only")


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        name=key.name,
        role=key.role,
        prefix=key.prefix,
        created_at=key.created_at,
        created_by=key.created_by,
        revoked_at=key.revoked_at,
        revoked_by=key.revoked_by,
        active=key.active,
    )


@router.get("/keys", response_model=list[KeyOut], summary="Every API key (never a secret)")
def list_keys(registry: RegistryDep, principal: KeyAdmin) -> list[KeyOut]:
    with registry.acting_as(principal):
        listed = registry.keys()  # Registry.keys: the API keys, not a mapping's
    return [key_out(key) for key in listed]


@router.post("/keys", response_model=CreatedKeyOut, status_code=201, summary="Create a key: its secret is shown once")
def create_key(body: KeyIn, response: Response, registry: RegistryDep, principal: KeyAdmin) -> CreatedKeyOut:
    with registry.acting_as(principal):
        record, secret = registry.create_key(body.name, body.role)
    response.headers["Cache-Control"] = "no-store"
    return CreatedKeyOut(**key_out(record).model_dump(), key=secret)


@router.delete("/keys/{name}", response_model=KeyOut, summary="Revoke a key (it is refused from then on)")
def revoke_key(name: str, registry: RegistryDep, principal: KeyAdmin) -> KeyOut:
    with registry.acting_as(principal):
        return key_out(registry.revoke_key(name))
