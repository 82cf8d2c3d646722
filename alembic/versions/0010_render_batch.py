"""render jobs know the bulk request that made them: ``render_job.batch_id``

A request for many units (a layer, a model) makes one job per unit. Each job of such a request keeps the id of the
request's first job (``batch_id``), so that the request is one entry of the activity feed ("rendered 512 units of
mixed4c"), written when its last job ends, instead of one entry per unit. A one-unit request has none. Jobs made
before this migration have none: they stay one entry each, as they were.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("render_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_render_job_batch_id"), ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("render_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_render_job_batch_id"))
        batch_op.drop_column("batch_id")
