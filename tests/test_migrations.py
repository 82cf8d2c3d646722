"""Migrations match the models: autogenerate against a freshly migrated database proposes nothing.

What the migrations make by hand (SQLite's FTS5 tables, PostgreSQL's per-model partitions, the generated
``claim.search`` column) is left out on purpose by ``kb.db.migrate.autogenerate_filter``; the InceptionV1 import
makes sure a partition exists on PostgreSQL while this runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import kb.db.annotation_tables
import kb.db.claim_tables
import kb.db.experiment_tables
import kb.db.render_tables
import kb.db.tables  # noqa: F401  (the models register their tables)
from kb.db import migrate


def test_autogenerate_proposes_no_operation(engine, inceptionv1):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": migrate.autogenerate_filter(conn.dialect.name),
                "render_as_batch": conn.dialect.name == "sqlite",
            },
        )
        assert compare_metadata(context, SQLModel.metadata) == []


def test_the_filter_leaves_out_only_what_is_made_by_hand(engine, inceptionv1):
    """Without the filter the same comparison does see those objects, so the test above can fail."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        names = {_name(diff) for diff in compare_metadata(context, SQLModel.metadata)}
        tables = set(sa.inspect(conn).get_table_names())
    if engine.dialect.name == "postgresql":
        assert any(t.startswith("connection_m") for t in tables)
        assert {"search", "ix_claim_search"} <= names
    else:
        assert "claim_fts" in names
    keep = migrate.autogenerate_filter(engine.dialect.name)
    assert keep(SQLModel.metadata.tables["claim"], "claim", "table", False, None)


def _name(diff) -> str:
    op = diff[0] if isinstance(diff, tuple) else diff[0][0]
    obj = diff[-1] if isinstance(diff, tuple) else diff[0][-1]
    if op in ("add_column", "remove_column"):
        return diff[3].name
    return getattr(obj, "name", str(obj))
