"""The application layer: the use cases the adapters (GraphQL schema, pages, CLI, render tasks) call.

It sits above the domain packages (``kb.claims``, ``kb.experiments``, ``kb.render``), the serving graphs
(``kb.serving``), the database (``kb.db``) and the pure graph code (``kb.graph``), and below every adapter; the
import-linter contracts in pyproject.toml hold that direction. A use case is one function with its unit of work:
``model_import`` (``kb import``: a model's graph written in one transaction) is the first here.
"""
