"""graph: models, layers, neurons, links, connections

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:58:07.023027
"""

import sqlalchemy as sa

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # One partition per model, created, indexed and attached by the importer (kb.db.bulk).
        op.execute("""
            CREATE TABLE connection (
                model_id integer NOT NULL,
                target_id integer NOT NULL,
                source_id integer NOT NULL,
                weight real NOT NULL,
                magnitude real NOT NULL,
                method varchar(16) NOT NULL
            ) PARTITION BY LIST (model_id)
        """)
    else:
        op.create_table(
            "connection",
            sa.Column("model_id", sa.Integer(), nullable=False),
            sa.Column("target_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("source_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("weight", sa.REAL(), nullable=False),
            sa.Column("magnitude", sa.REAL(), nullable=False),
            sa.Column("method", sa.String(length=16), nullable=False),
            sa.PrimaryKeyConstraint("target_id", "source_id"),
            sqlite_with_rowid=False,
        )
        with op.batch_alter_table("connection", schema=None) as batch_op:
            batch_op.create_index("ix_connection_source", ["source_id"], unique=False)

    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("weights", sa.String(length=512), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "layer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("module_path", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("output_shape", sa.JSON(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "key"),
        sa.UniqueConstraint("model_id", "position"),
    )
    op.create_table(
        "layer_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("source_layer_id", sa.Integer(), nullable=False),
        sa.Column("target_layer_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("program", sa.JSON(), nullable=False),
        sa.Column("arrays", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_layer_id"], ["layer.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["target_layer_id"], ["layer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_layer_id", "target_layer_id"),
    )
    with op.batch_alter_table("layer_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_layer_link_model_id"), ["model_id"], unique=False)

    op.create_table(
        "neuron",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("layer_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["layer_id"], ["layer.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("layer_id", "index"),
    )
    with op.batch_alter_table("neuron", schema=None) as batch_op:
        batch_op.create_index("ix_neuron_model", ["model_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("neuron", schema=None) as batch_op:
        batch_op.drop_index("ix_neuron_model")

    op.drop_table("neuron")
    with op.batch_alter_table("layer_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_layer_link_model_id"))

    op.drop_table("layer_link")
    op.drop_table("layer")
    op.drop_table("model")
    op.drop_table("connection")
