"""The one base of expected failures in domain code: a message and the code clients see (extensions.code).

Graph keys, circuits, claims and render parameters raise subclasses; the API turns any of them into a coded
GraphQL error in one place (kb.schema.errors.coded) and the CLI into one line and exit code 1.
"""

from __future__ import annotations


class Problem(Exception):
    code = "BAD_INPUT"

    def __init__(self, message: str, **extensions: object):
        super().__init__(message)
        self.message = message
        self.extensions = {k: v for k, v in extensions.items() if v is not None}

    def __str__(self) -> str:
        return self.message
