"""claims

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:32:36.981920
"""

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kb_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "review_revision",
        sa.Column("claim_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("claim_id", "user_id", "revision"),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["kb_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_token_user_id"), ["user_id"], unique=False)

    op.create_table(
        "circuit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("neurons", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["kb_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("circuit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_circuit_model_key"), ["model_key"], unique=False)

    op.create_table(
        "claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model_key", sa.String(length=64), nullable=False),
        sa.Column("circuit_id", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=300), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("support_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dispute_count", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_id"],
            ["circuit.id"],
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["kb_user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin"),
    )
    with op.batch_alter_table("claim", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claim_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_claim_model_key"), ["model_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_claim_status"), ["status"], unique=False)

    op.create_table(
        "claim_revision",
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("circuit_id", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("message", sa.String(length=500), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["kb_user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claim.id"],
        ),
        sa.PrimaryKeyConstraint("claim_id", "revision"),
    )
    op.create_table(
        "claim_subject",
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(length=64), nullable=False),
        sa.Column("layer_key", sa.String(length=64), nullable=False),
        sa.Column("neuron_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claim.id"],
        ),
        sa.PrimaryKeyConstraint("claim_id", "model_key", "layer_key", "neuron_index"),
    )
    with op.batch_alter_table("claim_subject", schema=None) as batch_op:
        batch_op.create_index("ix_claim_subject_neuron", ["model_key", "layer_key", "neuron_index"], unique=False)

    op.create_table(
        "review",
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claim.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["kb_user.id"],
        ),
        sa.PrimaryKeyConstraint("claim_id", "user_id"),
    )
    _full_text_search_up()


def _full_text_search_up() -> None:
    """Claims by label and body text: PostgreSQL full-text search, SQLite FTS5 kept in step by triggers."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE claim ADD COLUMN search tsvector GENERATED ALWAYS AS "
            "(setweight(to_tsvector('english', label), 'A') || setweight(to_tsvector('english', body), 'B')) "
            "STORED"
        )
        op.execute("CREATE INDEX ix_claim_search ON claim USING gin (search)")
        return
    op.execute(
        "CREATE VIRTUAL TABLE claim_fts USING fts5(label, body, content='claim', content_rowid='id', "
        "tokenize='porter unicode61')"
    )
    op.execute("""CREATE TRIGGER claim_fts_insert AFTER INSERT ON claim BEGIN
        INSERT INTO claim_fts(rowid, label, body) VALUES (new.id, new.label, new.body); END""")
    op.execute("""CREATE TRIGGER claim_fts_delete AFTER DELETE ON claim BEGIN
        INSERT INTO claim_fts(claim_fts, rowid, label, body) VALUES ('delete', old.id, old.label, old.body); END""")
    op.execute("""CREATE TRIGGER claim_fts_update AFTER UPDATE OF label, body ON claim BEGIN
        INSERT INTO claim_fts(claim_fts, rowid, label, body) VALUES ('delete', old.id, old.label, old.body);
        INSERT INTO claim_fts(rowid, label, body) VALUES (new.id, new.label, new.body); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("claim_fts_insert", "claim_fts_delete", "claim_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS claim_fts")
    op.drop_table("review")
    with op.batch_alter_table("claim_subject", schema=None) as batch_op:
        batch_op.drop_index("ix_claim_subject_neuron")

    op.drop_table("claim_subject")
    op.drop_table("claim_revision")
    with op.batch_alter_table("claim", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claim_status"))
        batch_op.drop_index(batch_op.f("ix_claim_model_key"))
        batch_op.drop_index(batch_op.f("ix_claim_kind"))

    op.drop_table("claim")
    with op.batch_alter_table("circuit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_circuit_model_key"))

    op.drop_table("circuit")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_token_user_id"))

    op.drop_table("api_token")
    op.drop_table("review_revision")
    op.drop_table("kb_user")
