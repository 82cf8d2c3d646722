"""activity in commit order: ``activity.seq``, which live streams and their resumption follow

On PostgreSQL an activity id comes from a sequence when the row is inserted, and transactions commit in any order:
a live stream that has sent id 12 can later see id 11 commit, and "ids after the last sent" never sends it.
``seq`` is given when the row's transaction commits: a deferred constraint trigger (it runs in COMMIT, after the
transaction's own statements) takes a transaction-level advisory lock, then the next value of
``activity_commit_seq``. That lock is released only once the commit is visible, so the next committer's ``seq`` is
greater and visible later: whoever has seen ``seq`` N never sees a new row below N. Only the commits of activity
rows wait on each other, each for the moment of its commit.

On SQLite one writer at a time holds the write lock until it commits, so a plain trigger gives ``seq`` on insert,
the next above the greatest. The rows already there get ``seq = id``, so a browser's Last-Event-ID (an id until
now) still resumes where it was.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LOCK_KEY = 0x6B626163  # "kbac": the advisory lock that orders the commits of activity rows

_FUNCTION = f"""
CREATE FUNCTION activity_commit_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- held until this transaction's commit is visible: the next committer waits, and its seq is greater
    PERFORM pg_advisory_xact_lock({LOCK_KEY});
    UPDATE activity SET seq = nextval('activity_commit_seq') WHERE id = NEW.id;
    RETURN NULL;
END
$$"""

_TRIGGER = """
CREATE CONSTRAINT TRIGGER activity_commit_seq AFTER INSERT ON activity
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION activity_commit_seq()"""


_SQLITE_TRIGGER = """
CREATE TRIGGER activity_commit_seq AFTER INSERT ON activity FOR EACH ROW
BEGIN
    UPDATE activity SET seq = (SELECT coalesce(max(seq), 0) + 1 FROM activity) WHERE id = NEW.id;
END"""


def upgrade() -> None:
    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE activity SET seq = id")
    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activity_seq"), ["seq"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE activity_commit_seq AS bigint")
        op.execute("SELECT setval('activity_commit_seq', (SELECT coalesce(max(id), 0) + 1 FROM activity), false)")
        op.execute(_FUNCTION)
        op.execute(_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER activity_commit_seq ON activity")
        op.execute("DROP FUNCTION activity_commit_seq()")
        op.execute("DROP SEQUENCE activity_commit_seq")
    else:
        op.execute("DROP TRIGGER activity_commit_seq")
    with op.batch_alter_table("activity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activity_seq"))
        batch_op.drop_column("seq")
