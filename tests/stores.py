"""The artifact store a test's servers and workers use (kb.render.storage): the one KB_ARTIFACT_STORE's default
picks for the test database (files on SQLite, the database on PostgreSQL), with the session's KB_DATA_DIR."""

from __future__ import annotations

import sqlalchemy as sa

from kb.render.storage import ArtifactStore, storage_from_settings
from kb.settings import Settings


def settings_for(engine: sa.Engine, **more) -> Settings:
    """The settings of a server on this database (as the ``api`` fixture's): its artifact store's included."""
    return Settings(database_url=engine.url.render_as_string(hide_password=False), **more)


def store_for(engine: sa.Engine, **more) -> ArtifactStore:
    return storage_from_settings(settings_for(engine, **more), engine)
