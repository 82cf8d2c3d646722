"""Checks of one field of a claim-file record: each returns the clean value or raises ``Bad(field, message)``,
which the importer turns into one line: ``line 7: revisions[1].kind: 'BOGUS' is not one of ...``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kb.claims.accounts import NAME
from kb.graph.keys import Catalog, KeyProblem

Types = type | tuple[type, ...]  # what need accepts: one type or several


class Bad(Exception):
    def __init__(self, field: str, message: str):
        self.field, self.message = field, message


def ts(v: datetime | None) -> str | None:
    """A stored date as ISO 8601 in UTC (SQLite hands back naive datetimes: they are UTC)."""
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat()


def need(obj: dict[str, Any], field: str, types: Types, *, nullable: bool = False, where: str = "") -> Any:
    """The field's value if it has one of these types (or is null, when allowed); Bad otherwise."""
    name = where + field
    if field not in obj:
        raise Bad(name, "missing")
    value = obj[field]
    if value is None and nullable:
        return None
    if not isinstance(value, types) or (
        isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    ):
        raise Bad(name, f"expected {_type_name(types)}, got {json.dumps(value)[:60]}")
    return value


def _type_name(types: Types) -> str:
    names: dict[type, str] = {
        str: "text",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "true/false",
    }
    return " or ".join(names.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def text(obj: dict[str, Any], field: str, limit: int, *, where: str = "", nonblank: bool = False) -> str:
    value: str = need(obj, field, str, where=where)
    if len(value) > limit or (nonblank and not value.strip()):
        raise Bad(where + field, f"{'empty or ' if nonblank else ''}longer than {limit} characters")
    return value


def date(obj: dict[str, Any], field: str, *, nullable: bool = False, where: str = "") -> datetime | None:
    value = need(obj, field, str, nullable=nullable, where=where)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Bad(where + field, f"{value[:40]!r} is not an ISO 8601 date") from None
    if parsed.tzinfo is None:
        raise Bad(where + field, f"{value[:40]!r} has no time zone")
    return parsed


def one_of(obj: dict[str, Any], field: str, allowed: Iterable[str], where: str = "") -> str:
    value: str = need(obj, field, str, where=where)
    if value not in allowed:
        raise Bad(where + field, f"{value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def numbered(key: str, prefix: str, field: str) -> int:
    """claim:17 -> 17 (the key's number is the row id an import keeps)."""
    m = re.fullmatch(prefix + r":([1-9][0-9]{0,17})", key)
    if not m:
        raise Bad(field, f"{key[:40]!r} is not a key like {prefix}:17")
    return int(m[1])


def user_name(name: str, field: str) -> str:
    if not NAME.match(name):
        raise Bad(field, f"{name[:40]!r} is not a valid user name")
    return name


def subject(catalog: Catalog, key: object, model: str, field: str) -> str:
    """A canonical neuron key of ``model``; checked against the catalog where that model is imported here."""
    if not isinstance(key, str):
        raise Bad(field, "expected a neuron key")
    m = re.fullmatch(r"([^/\s]+)/([^:\s]+):([0-9]+)", key)
    if not m:
        raise Bad(field, f"{key[:60]!r} is not a canonical neuron key (model/layer:index)")
    if m[1] != model:
        raise Bad(field, f"{key[:60]!r} is not of the record's model {model!r}")
    known = catalog.models.get(model.lower())
    if known is not None and not known.removed:  # another database's model, or a removed one: the key is kept
        try:
            if str(catalog.neuron(key)) != key:
                raise Bad(field, f"{key[:60]!r} is not the canonical form")
        except KeyProblem as exc:
            raise Bad(field, str(exc)) from None
    return key
