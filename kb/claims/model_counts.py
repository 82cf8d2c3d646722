"""Claims and circuits counted by model, for many models at once (the front page's model cards): one statement
per table, whatever the number of models. The counts are those of ``claims(model:)`` and ``circuits(model:)``:
every claim and circuit of the model, whatever its status."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from kb.db.claim_tables import circuit_table, claim_table


def _by_model(conn: sa.Connection, table: sa.Table, model_keys: Collection[str]) -> dict[str, int]:
    out = dict.fromkeys(model_keys, 0)
    if out:
        q = (
            sa.select(table.c.model_key, sa.func.count())
            .where(table.c.model_key.in_(set(out)))
            .group_by(table.c.model_key)
        )
        for key, n in conn.execute(q):
            out[key] = n
    return out


def claims_by_model(conn: sa.Connection, model_keys: Collection[str]) -> dict[str, int]:
    """The number of claims about each model (0 for a model with none)."""
    return _by_model(conn, claim_table, model_keys)


def circuits_by_model(conn: sa.Connection, model_keys: Collection[str]) -> dict[str, int]:
    """The number of circuits of each model (0 for a model with none)."""
    return _by_model(conn, circuit_table, model_keys)
