"""lean imports: connections without a per-row method or an index on source_id; link arrays not compressed

A connection's method is its layer link's (``layer_link.method``), so each of VGG16's 20 M rows no longer
repeats it; and nothing reads connections by source: outputs are served from the graph files, and the database
is read by target (the primary key). Together they halve the time PostgreSQL spends taking an import.

On PostgreSQL a link's arrays (an npz of float weights: VGG16's fc6 is 0.4 GB) are stored out of line without
compression: pglz found matches in the npz header, so it compressed all 0.4 GB before giving the result up as
too large (9.6 s to store it, 2.5 s without the attempt).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PARTITIONS = "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^connection_m[0-9]+$'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for (part,) in op.get_bind().exec_driver_sql(_PARTITIONS).all():
            op.execute(f"DROP INDEX IF EXISTS {part}_source")
        op.execute("ALTER TABLE connection DROP COLUMN method")  # every partition's too; no rewrite
        op.execute("ALTER TABLE layer_link ALTER COLUMN arrays SET STORAGE EXTERNAL")  # rows written from now on
        return
    op.drop_index("ix_connection_source", table_name="connection")
    op.execute("ALTER TABLE connection DROP COLUMN method")  # SQLite 3.35+: rewrites the rows in place


_METHOD_OF_LINK = """
    UPDATE connection SET method = k.method
    FROM neuron s, neuron t, layer_link k
    WHERE s.id = connection.source_id AND t.id = connection.target_id
      AND k.source_layer_id = s.layer_id AND k.target_layer_id = t.layer_id"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE layer_link ALTER COLUMN arrays SET STORAGE EXTENDED")
        op.execute("ALTER TABLE connection ADD COLUMN method varchar(16) NOT NULL DEFAULT ''")
        op.execute(_METHOD_OF_LINK)
        op.execute("ALTER TABLE connection ALTER COLUMN method DROP DEFAULT")
        for (part,) in op.get_bind().exec_driver_sql(_PARTITIONS).all():
            op.execute(f"CREATE INDEX {part}_source ON {part} (source_id)")
        return
    with op.batch_alter_table("connection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=16), nullable=False, server_default=""))
    op.execute(_METHOD_OF_LINK)
    op.create_index("ix_connection_source", "connection", ["source_id"], unique=False)
