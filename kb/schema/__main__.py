"""Print the GraphQL schema (SDL): ``python -m kb.schema > schema.graphql``."""

from kb.schema import build_schema

print(build_schema().as_str())
