"""Step 4 of the flow: what is registered, in SQL (SQLite by default, PostgreSQL by URL).

This package's `__init__` stays free of SQLAlchemy so that `fastpath` can be imported cheaply;
use `modelyard.catalog.catalog.Catalog` for everything else.
"""

# The Alembic head this code expects; tests check it matches catalog/migrations/versions.
SCHEMA_REVISION = "0007"
