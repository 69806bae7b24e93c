"""Alembic environment: the URL comes from the caller (core.db.migrate), never from an ini file."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from core.db.models import Base

config = context.config
_url = config.get_main_option("sqlalchemy.url")
if _url is None:
    raise RuntimeError("no sqlalchemy.url: run migrations through core.db.migrate")
url: str = _url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
