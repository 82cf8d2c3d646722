"""integrity: the claim revision each review judged; when a render job was last sent and may be tried again

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:40:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("review", sa.Column("claim_revision", sa.Integer(), nullable=True))
    op.add_column("review_revision", sa.Column("claim_revision", sa.Integer(), nullable=True))
    op.add_column("render_job", sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("render_job", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("render_job") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("enqueued_at")
    with op.batch_alter_table("review_revision") as batch:
        batch.drop_column("claim_revision")
    with op.batch_alter_table("review") as batch:
        batch.drop_column("claim_revision")
