"""Engines for the catalog database, and bringing its schema to the current Alembic revision.

SQLite (the embedded default) runs in WAL mode with foreign keys on, a 30 s busy timeout and
synchronous=FULL, so a commit is durable when it returns. Write transactions start with
`BEGIN IMMEDIATE`, which takes SQLite's write lock up front: two registrations then queue
instead of one failing with "database is locked" when it upgrades a read to a write.
PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from modelyard.catalog import SCHEMA_REVISION
from modelyard.errors import CatalogError, InvalidInputError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK_KEY = 0x6D6F64656C  # any fixed 64-bit number, shared by all modelyard processes


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and route them to psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<catalog url>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_catalog_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        raise InvalidInputError(f"cannot parse catalog URL {url!r}", field="db_url") from None
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    raise InvalidInputError(
        f"unsupported catalog database {backend!r}; use sqlite:///PATH or postgresql://...", field="db_url"
    )


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create the catalog directory: {exc.strerror}", path=path) from None
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event (below) issue BEGIN, instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer_engine(engine: Engine) -> Engine:
    """The same engine, but its transactions take the write lock first (SQLite)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError) as exc:
        message = (str(exc.orig) if exc.orig else str(exc)).strip().splitlines()[0]
        if "alembic_version" in message and ("no such table" in message or "does not exist" in message):
            return None
        raise CatalogError(
            f"cannot reach the catalog at {safe_url(engine.url.render_as_string())}: {message.strip()}"
        ) from None


def ensure_schema(engine: Engine) -> None:
    """Create or upgrade the schema to SCHEMA_REVISION; refuse a newer, unknown one."""
    revision = current_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    _check_known(revision, engine)
    with _migration_lock(engine):
        if current_revision(engine) != SCHEMA_REVISION:
            upgrade(engine, "head")


def _check_known(revision: str | None, engine: Engine) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise CatalogError(
            f"the catalog at {safe_url(engine.url.render_as_string())} has schema revision {revision}, "
            f"newer than this modelyard knows ({SCHEMA_REVISION}); upgrade modelyard"
        )


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Only one process migrates; the others wait, then find the schema current."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "sqlite" and path is not None:
        fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
                connection.commit()
    else:
        yield
