"""claims pin their circuit's revision; circuit revisions share content-addressed edge lists

A claim revision about a circuit names the circuit's revision it is about (``claim_revision.circuit_revision``,
and the claim's current one in ``claim.circuit_revision``): a later circuit edit does not change what a judged
claim says. Existing claim revisions get the circuit revision that was current when they were made (the newest
circuit revision made at or before the claim revision; revision 1 if the circuit has none that early).

Circuit revisions no longer each hold a copy of their edges: ``circuit_edge_list`` holds each distinct list once,
keyed by the sha256 of its canonical JSON (kb.claims.edge_lists), and a revision names its list.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 00:00:00
"""

import hashlib
import json

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _canonical(edges: list) -> str:
    """kb.claims.edge_lists.canonical, as of this migration."""
    rows = [{"note": e.get("note") or "", "source": e["source"], "target": e["target"]} for e in edges]
    return json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _edges(value) -> list:
    return json.loads(value) if isinstance(value, str) else list(value)


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "circuit_edge_list",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("edge_count", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    with op.batch_alter_table("circuit_revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edges_sha256", sa.String(length=64), nullable=True))

    lists = sa.table(
        "circuit_edge_list",
        sa.column("sha256", sa.String),
        sa.column("edges", sa.JSON),
        sa.column("edge_count", sa.Integer),
        sa.column("size", sa.Integer),
    )
    revs = sa.table(
        "circuit_revision",
        sa.column("circuit_id", sa.Integer),
        sa.column("revision", sa.Integer),
        sa.column("edges", sa.JSON),
        sa.column("edges_sha256", sa.String),
    )
    seen: set[str] = set()
    keys = conn.execute(sa.select(revs.c.circuit_id, revs.c.revision).order_by(revs.c.circuit_id, revs.c.revision))
    for circuit_id, number in keys.all():  # one revision's edges in memory at a time
        where = (revs.c.circuit_id == circuit_id) & (revs.c.revision == number)
        edges = _edges(conn.execute(sa.select(revs.c.edges).where(where)).scalar_one())
        text = _canonical(edges)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if sha not in seen:
            seen.add(sha)
            conn.execute(
                sa.insert(lists).values(
                    sha256=sha, edges=json.loads(text), edge_count=len(edges), size=len(text.encode())
                )
            )
        conn.execute(sa.update(revs).where(where).values(edges_sha256=sha))

    with op.batch_alter_table("circuit_revision", schema=None) as batch_op:
        batch_op.alter_column("edges_sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ix_circuit_revision_edges_sha256", ["edges_sha256"], unique=False)
        batch_op.create_foreign_key(
            "fk_circuit_revision_edges_sha256", "circuit_edge_list", ["edges_sha256"], ["sha256"]
        )
        batch_op.drop_column("edges")

    with op.batch_alter_table("claim", schema=None) as batch_op:
        batch_op.add_column(sa.Column("circuit_revision", sa.Integer(), nullable=True))
    with op.batch_alter_table("claim_revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("circuit_revision", sa.Integer(), nullable=True))
    # each claim revision: the newest circuit revision made at or before it (1 if none: e.g. an imported circuit)
    op.execute(
        """UPDATE claim_revision SET circuit_revision = COALESCE(
             (SELECT max(cr.revision) FROM circuit_revision cr
              WHERE cr.circuit_id = claim_revision.circuit_id AND cr.created_at <= claim_revision.created_at), 1)
           WHERE circuit_id IS NOT NULL"""
    )
    op.execute(
        """UPDATE claim SET circuit_revision = (SELECT r.circuit_revision FROM claim_revision r
             WHERE r.claim_id = claim.id AND r.revision = claim.revision)
           WHERE circuit_id IS NOT NULL"""
    )


def downgrade() -> None:
    # in place (SQLite 3.35+ too): recreating claim would break the foreign keys that point at it
    op.execute("ALTER TABLE claim_revision DROP COLUMN circuit_revision")
    op.execute("ALTER TABLE claim DROP COLUMN circuit_revision")
    with op.batch_alter_table("circuit_revision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edges", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE circuit_revision SET edges = "
        "(SELECT l.edges FROM circuit_edge_list l WHERE l.sha256 = circuit_revision.edges_sha256)"
    )
    with op.batch_alter_table("circuit_revision", schema=None) as batch_op:
        batch_op.alter_column("edges", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_constraint("fk_circuit_revision_edges_sha256", type_="foreignkey")
        batch_op.drop_index("ix_circuit_revision_edges_sha256")
        batch_op.drop_column("edges_sha256")
    op.drop_table("circuit_edge_list")
