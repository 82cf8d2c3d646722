"""render lanes and cancel: each render job's lane (interactive, view, bulk), which workers take in that order;
a job may end CANCELLED (status is a plain string: no constraint to change)

Jobs queued before this go to the bulk lane (a backlog of old requests does not pass people waiting now).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite and PostgreSQL both add a NOT NULL column with a constant default in place (no table copy)
    op.add_column("render_job", sa.Column("lane", sa.String(16), nullable=False, server_default="bulk"))
    op.create_index("ix_render_job_lane", "render_job", ["status", "lane"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_render_job_lane", table_name="render_job")
    op.execute("UPDATE render_job SET status = 'FAILED', error = 'cancelled' WHERE status = 'CANCELLED'")
    with op.batch_alter_table("render_job") as batch:
        batch.drop_column("lane")
