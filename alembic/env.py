"""Alembic environment: the URL comes from the caller's config (kb.db.migrate) or from KB_DATABASE_URL."""

from sqlmodel import SQLModel

import kb.db.annotation_tables
import kb.db.claim_tables
import kb.db.experiment_tables
import kb.db.render_tables
import kb.db.tables  # noqa: F401
from alembic import context
from kb.db import migrate
from kb.db.engine import make_engine
from kb.settings import get_settings

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=_url().startswith("sqlite")
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=migrate.autogenerate_filter(connection.dialect.name),
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
