"""What a model's renders amount to, read for many models at once (the front page's model cards): how many units
have a feature visualization, and a few of those units to show. Each is one statement for all the models asked
about, whatever their number, and what it returns is bounded by the models times ``per_model``.

A unit counts as rendered when it has a finished, positive feature visualization with any parameters: the layer
page's "N of M units rendered" counts the same.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from kb.db.render_tables import render_job_table


def _rendered(model_sha256s: Collection[str]) -> sa.Select[str, str, int, int]:
    """(model_sha256, layer_key, unit, newest job id) of every rendered unit of these models."""
    t = render_job_table
    negative = sa.func.coalesce(t.c.params["negative"].as_boolean(), sa.false())
    return (
        sa.select(t.c.model_sha256, t.c.layer_key, t.c.unit, sa.func.max(t.c.id).label("newest"))
        .where(
            t.c.model_sha256.in_(set(model_sha256s)),
            t.c.status == "DONE",
            t.c.kind == "FEATURE_VIS",
            t.c.unit >= 0,
            sa.not_(negative),
        )
        .group_by(t.c.model_sha256, t.c.layer_key, t.c.unit)
    )


def rendered_units(conn: sa.Connection, model_sha256s: Collection[str]) -> dict[str, int]:
    """Units with a feature visualization, by model sha256 (0 for a model with none), in one statement."""
    out = dict.fromkeys(model_sha256s, 0)
    if not out:
        return out
    units = _rendered(out).subquery()
    q = sa.select(units.c.model_sha256, sa.func.count()).group_by(units.c.model_sha256)
    for sha, n in conn.execute(q):
        out[sha] = n
    return out


def showcase(conn: sa.Connection, model_sha256s: Collection[str], per_model: int) -> dict[str, list[tuple[str, int]]]:
    """Up to ``per_model`` rendered units of each model, as (layer key, unit), in one statement: taken in turn
    from each layer that has any (its newest renders first), so that a model's strip spans its layers."""
    out: dict[str, list[tuple[str, int]]] = {sha: [] for sha in model_sha256s}
    if not out or per_model < 1:
        return out
    units = _rendered(out).subquery()
    in_layer = sa.select(
        units,
        sa.func.row_number()
        .over(partition_by=(units.c.model_sha256, units.c.layer_key), order_by=units.c.newest.desc())
        .label("in_layer"),
    ).subquery()
    ranked = sa.select(
        in_layer,
        sa.func.row_number()
        .over(partition_by=in_layer.c.model_sha256, order_by=(in_layer.c.in_layer, in_layer.c.newest.desc()))
        .label("rank"),
    ).subquery()
    q = (
        sa.select(ranked.c.model_sha256, ranked.c.layer_key, ranked.c.unit)
        .where(ranked.c.rank <= per_model)
        .order_by(ranked.c.model_sha256, ranked.c.rank)
    )
    for sha, layer, unit in conn.execute(q):
        out[sha].append((layer, unit))
    return out
