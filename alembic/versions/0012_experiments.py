"""experiments on circuits: one row per circuit revision checked by experiment (sufficiency, necessity, their
random baseline) on a data set with an ablation; the job that measured it is a render_job of kind CIRCUIT_CHECK

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("circuit_revision", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("ablation", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_hash", sa.String(64), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["circuit_id"], ["circuit.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["render_job.id"]),
        sa.ForeignKeyConstraint(["requested_by"], ["kb_user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("circuit_id", "circuit_revision", "params_hash"),
    )
    op.create_index("ix_experiment_circuit_id", "experiment", ["circuit_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_experiment_circuit_id", table_name="experiment")
    op.drop_table("experiment")
