"""A read-only lookup of "is this exact content already a version of this name?" for SQLite.

Re-registering an unchanged run directory is the most frequent command in a training loop, and
importing SQLAlchemy alone costs about 0.2 s. This module answers that one question with the
standard library's sqlite3, against the same tables and the same schema revision, and answers
None whenever it is unsure (another database, an older or newer schema, any error), in which
case the registry takes its normal path through `Catalog`. It never writes.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from modelyard.domain import VersionRecord

_QUERY = """
SELECT v.number, v.manifest_json, v.content_key, v.registered_at, v.registered_by, v.source_path,
       v.stage, v.label, v.semver, v.forced
FROM versions v JOIN artifacts a ON a.id = v.artifact_id
WHERE a.name = ? AND v.content_key = ?
ORDER BY v.number DESC LIMIT 1
"""


def find_by_content(db_path: Path, schema_revision: str, name: str, content_key: str) -> VersionRecord | None:
    if not db_path.exists():
        return None
    try:
        connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        if revision is None or revision[0] != schema_revision:
            return None
        row = connection.execute(_QUERY, (name, content_key)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if row is None:
        return None
    number, manifest_json, key, registered_at, registered_by, source_path, stage, label, semver, forced = row
    return VersionRecord(
        artifact_name=name,
        number=number,
        manifest_json=manifest_json,
        content_key=key,
        registered_at=_parse_sqlite_datetime(registered_at),
        registered_by=registered_by,
        source_path=source_path,
        stage=stage,
        label=label,
        semver=semver,
        forced=bool(forced),
    )


def _parse_sqlite_datetime(value: str) -> datetime:
    """SQLAlchemy stores DateTime on SQLite as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC here)."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL (without importing SQLAlchemy), else None."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)
