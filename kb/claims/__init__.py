"""The claim layer: accounts, claims with full history, reviews, circuits, search, citation, import/export.

Domain code: SQLAlchemy Core and the graph's keys; it knows nothing of GraphQL or Celery.
"""
