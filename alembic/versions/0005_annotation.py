"""annotation: passwords, sign-in sessions and failures, circuit revisions, the activity feed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:50:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("kb_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
    with op.batch_alter_table("circuit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))

    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("revoked_at", True),
        sa.Column("address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("user_agent", sa.String(length=300), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["kb_user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_user_id"), ["user_id"], unique=False)

    op.create_table(
        "signin_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("signin_failure", schema=None) as batch_op:
        batch_op.create_index("ix_signin_failure_name", ["name", "at"], unique=False)
        batch_op.create_index("ix_signin_failure_address", ["address", "at"], unique=False)

    op.create_table(
        "circuit_revision",
        sa.Column("circuit_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("neurons", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("message", sa.String(length=500), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["kb_user.id"]),
        sa.ForeignKeyConstraint(["circuit_id"], ["circuit.id"]),
        sa.PrimaryKeyConstraint("circuit_id", "revision"),
    )
    # every existing circuit becomes its own revision 1
    op.execute(
        "INSERT INTO circuit_revision (circuit_id, revision, author_id, created_at, name, description, neurons, "
        "edges, message) SELECT id, 1, created_by, created_at, name, description, neurons, edges, '' FROM circuit"
    )

    op.create_table(
        "activity",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model_key", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("summary", sa.String(length=300), server_default="", nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("neurons", sa.JSON(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=True),
        sa.Column("circuit_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["kb_user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activity_model_key"), ["model_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activity_model_key"))
    op.drop_table("activity")
    op.drop_table("circuit_revision")
    with op.batch_alter_table("signin_failure", schema=None) as batch_op:
        batch_op.drop_index("ix_signin_failure_address")
        batch_op.drop_index("ix_signin_failure_name")
    op.drop_table("signin_failure")
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_user_id"))
    op.drop_table("web_session")
    with op.batch_alter_table("circuit", schema=None) as batch_op:
        batch_op.drop_column("revision")
    with op.batch_alter_table("kb_user", schema=None) as batch_op:
        batch_op.drop_column("password_hash")
