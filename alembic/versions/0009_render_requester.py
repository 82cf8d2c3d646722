"""render requester: the account whose request queued each render job (quotas count by it; moderators see it)

Jobs queued before this have no requester (as the operator's CLI jobs have none).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # in place (SQLite adds a NULL column with a reference, no copy)
        op.execute("ALTER TABLE render_job ADD COLUMN requested_by INTEGER REFERENCES kb_user (id)")
    else:
        op.add_column("render_job", sa.Column("requested_by", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_render_job_requested_by", "render_job", "kb_user", ["requested_by"], ["id"])
    op.create_index("ix_render_job_requested_by", "render_job", ["requested_by", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_render_job_requested_by", table_name="render_job")
    if op.get_bind().dialect.name == "sqlite":  # a column with a reference: only by a copy of the table
        with op.batch_alter_table("render_job") as batch:
            batch.drop_column("requested_by")
        return
    op.drop_constraint("fk_render_job_requested_by", "render_job", type_="foreignkey")
    op.drop_column("render_job", "requested_by")
