"""Expected failures of the claim layer, each with the code the API reports (extensions.code)."""

from __future__ import annotations

from kb.errors import Problem


class ClaimProblem(Problem):
    code = "BAD_INPUT"


class BadInput(ClaimProblem):
    code = "BAD_INPUT"


class NotFound(ClaimProblem):
    code = "NOT_FOUND"


class Unauthenticated(ClaimProblem):
    code = "UNAUTHENTICATED"


class Forbidden(ClaimProblem):
    code = "FORBIDDEN"


class EditConflict(ClaimProblem):
    code = "EDIT_CONFLICT"


class RateLimited(ClaimProblem):
    code = "RATE_LIMITED"


class TooLarge(ClaimProblem):
    code = "TOO_LARGE"
