"""schema.graphql is committed so that clients can code against it; it must match the code."""

from pathlib import Path

from kb.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_committed_schema_matches_the_code():
    expected = build_schema().as_str() + "\n"
    assert SCHEMA_FILE.read_text() == expected, (
        "schema.graphql is out of date: run  .venv/bin/python -m kb.schema > schema.graphql"
    )
