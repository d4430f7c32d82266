"""API key rows: created, listed, revoked, looked up by the SHA-256 of the secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from modelyard.access import ApiKey, Principal
from modelyard.catalog.tables import ApiKeyRow, EventRow
from modelyard.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from modelyard.catalog.catalog import Catalog


class KeyRecords:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, name: str, role: str, key_digest: str, prefix: str, actor: str) -> ApiKey:
        now = datetime.now(UTC)
        try:
            with self.catalog._write() as session:
                if session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == name)).first() is not None:
                    raise ConflictError(
                        f"a key named {name!r} exists; revoke it or choose another name", field="--name"
                    )
                row = ApiKeyRow(
                    name=name, role=role, digest=key_digest, prefix=prefix, created_at=now, created_by=actor
                )
                session.add(row)
                session.add(_event(now, actor, "key.create", {"name": name, "role": role, "prefix": prefix}))
                session.flush()
                record = _key(row)
        except IntegrityError:
            raise ConflictError(f"a key named {name!r} exists", field="--name") from None
        return record

    def revoke(self, name: str, actor: str) -> ApiKey:
        now = datetime.now(UTC)
        with self.catalog._write() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == name)).first()
            if row is None:
                raise NotFoundError(f"no key named {name!r} (modelyard keys list)")
            if row.revoked_at is None:
                row.revoked_at = now
                row.revoked_by = actor
                session.add(_event(now, actor, "key.revoke", {"name": name, "role": row.role}))
            session.flush()
            return _key(row)

    def list(self) -> list[ApiKey]:
        with self.catalog._read() as session:
            return [_key(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))]

    def principal(self, key_digest: str) -> Principal | None:
        """The active key with this digest, as a principal; None for an unknown or revoked key."""
        with self.catalog._connect() as connection:
            row = connection.execute(_BY_DIGEST, {"digest": key_digest}).first()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.name, row.role)


# Checked on every request: the statement is built once (bound parameter), not per call.
_BY_DIGEST = select(ApiKeyRow.name, ApiKeyRow.role, ApiKeyRow.revoked_at).where(ApiKeyRow.digest == bindparam("digest"))


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        name=row.name,
        role=row.role,
        prefix=row.prefix,
        created_at=_utc(row.created_at),
        created_by=row.created_by,
        revoked_at=_utc(row.revoked_at) if row.revoked_at else None,
        revoked_by=row.revoked_by,
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _event(at: datetime, actor: str, action: str, details: dict[str, str]) -> EventRow:
    return EventRow(
        at=at,
        actor=actor,
        action=action,
        artifact_name=None,
        version_number=None,
        details_json=json.dumps(details, sort_keys=True),
    )
