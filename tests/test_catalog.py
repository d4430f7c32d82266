"""The SQL catalog on SQLite and PostgreSQL: migrations, schema, queries, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from conftest import RunBuilder
from modelyard.catalog import SCHEMA_REVISION
from modelyard.catalog.catalog import Catalog
from modelyard.catalog.db import MIGRATIONS_DIR, create_catalog_engine, downgrade, upgrade
from modelyard.catalog.tables import Base
from modelyard.domain import ListFilters
from modelyard.errors import CatalogError
from modelyard.register.metadata import RegisterOptions
from modelyard.registry import Registry


def test_schema_revision_is_the_alembic_head() -> None:
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == SCHEMA_REVISION


def test_migrations_build_exactly_the_orm_schema_and_go_down_again(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    try:
        upgrade(engine, "head")
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"migrations and catalog/tables.py disagree: {diff}"
        downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine, "head")
        assert {"artifacts", "versions", "files", "version_tags", "events"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_newer_schema_is_refused(db_url: str) -> None:
    Catalog(db_url).close()
    engine = create_catalog_engine(db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(CatalogError, match="schema revision 9999, newer than this modelyard knows"):
        Catalog(db_url)


def test_sqlite_runs_in_wal_with_foreign_keys(home: Path) -> None:
    catalog = Catalog(f"sqlite:///{home / 'catalog.db'}")
    try:
        with catalog.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        catalog.close()


def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog("postgresql://someone:hunter2@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "cannot reach the catalog" in str(caught.value)


def test_unsupported_database_is_refused() -> None:
    from modelyard.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="unsupported catalog database 'mysql'"):
        Catalog("mysql://root@localhost/x")


def test_list_filters_and_versions(any_registry: Registry, make_run: RunBuilder) -> None:
    reg = any_registry
    reg.register(
        make_run("a"),
        RegisterOptions(artifact_name="vision-vit-base16-embed-v1", node_type="encoder", train_data_tags=["imagenet"]),
    )
    reg.register(
        make_run("b", seed=5), RegisterOptions(artifact_name="vision-vit-base16-embed-v1", node_type="encoder")
    )
    reg.register(
        make_run("c", seed=9),
        RegisterOptions(artifact_name="gpt-small-v1-lm-finetune-int8-v1", node_type="inference", component="inference"),
    )
    latest = reg.list()
    assert [(row.artifact_name, row.number, row.version_count) for row in latest] == [
        ("gpt-small-v1-lm-finetune-int8-v1", 1, 1),
        ("vision-vit-base16-embed-v1", 2, 2),
    ]
    assert [r.ref for r in reg.list(all_versions=True)] == [
        "gpt-small-v1-lm-finetune-int8-v1@1",
        "vision-vit-base16-embed-v1@2",
        "vision-vit-base16-embed-v1@1",
    ]
    assert [r.ref for r in reg.list(ListFilters(task="embed"))] == ["vision-vit-base16-embed-v1@2"]
    assert [r.ref for r in reg.list(ListFilters(component="inference"))] == ["gpt-small-v1-lm-finetune-int8-v1@1"]
    assert [r.ref for r in reg.list(ListFilters(node_type="encoder"))] == ["vision-vit-base16-embed-v1@2"]
    assert [r.ref for r in reg.list(ListFilters(base_model="gpt-small-v1"))] == ["gpt-small-v1-lm-finetune-int8-v1@1"]
    assert reg.list(ListFilters(tag="imagenet")) == []  # the latest version has no tag
    tagged = reg.list(ListFilters(tag="imagenet"), all_versions=True)
    assert [(r.ref, r.train_data_tags) for r in tagged] == [("vision-vit-base16-embed-v1@1", ("imagenet",))]
    quantized = reg.show("gpt-small-v1-lm-finetune-int8-v1")
    assert (quantized.manifest.quantized, quantized.manifest.precision) == (True, "int8")


def test_versions_and_manifests_read_back_identically(any_registry: Registry, make_run: RunBuilder) -> None:
    result = any_registry.register(make_run(), RegisterOptions(artifact_name="gpt-small-v1", precision="bf16"))
    any_registry.close()
    reopened = Registry(any_registry.settings)
    try:
        shown = reopened.show("gpt-small-v1@1")
        assert shown.manifest == result.version.manifest
        assert shown.registered_at == result.version.registered_at
        assert shown.content_key == result.version.content_key
    finally:
        reopened.close()


def test_database_errors_become_modelyard_errors(tmp_path: Path) -> None:
    """A real lock conflict and a real failure, translated in the one place that does it."""
    from sqlalchemy.exc import DBAPIError

    from modelyard.catalog.catalog import translate_database_error
    from modelyard.errors import BusyError

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    holder = sa.create_engine(url, connect_args={"timeout": 0, "isolation_level": None})
    waiter = sa.create_engine(url, connect_args={"timeout": 0, "isolation_level": None})
    with holder.connect() as held:
        held.exec_driver_sql("CREATE TABLE t (x)")
        held.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(DBAPIError) as caught, waiter.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        held.exec_driver_sql("ROLLBACK")
    error = translate_database_error(caught.value, url)
    assert isinstance(error, BusyError) and error.exit_code == 8
    assert "stayed locked by another process" in str(error)
    with pytest.raises(DBAPIError) as broken, waiter.connect() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    other = translate_database_error(broken.value, url)
    assert isinstance(other, CatalogError) and "no such table" in str(other)
    assert "\n" not in str(other)
    holder.dispose()
    waiter.dispose()
