"""the database artifact store (KB_ARTIFACT_STORE=database): each artifact's length and its bytes in chunks

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-14 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_blob",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("suffix", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "suffix"),
    )
    op.create_table(
        "artifact_chunk",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("suffix", sa.String(16), nullable=False),
        sa.Column("chunk_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256", "suffix"], ["artifact_blob.sha256", "artifact_blob.suffix"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sha256", "suffix", "chunk_no"),
    )


def downgrade() -> None:
    op.drop_table("artifact_chunk")
    op.drop_table("artifact_blob")
