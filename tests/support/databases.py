"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("AVATAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("AVATAR_REQUIRE_POSTGRES") == "1"


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                           connect_timeout=3)


def postgres_or_skip() -> None:
    """Skip when PostgreSQL is unreachable, unless CI requires it (then fail loudly)."""
    try:
        _pg_admin().close()
    except Exception as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (AVATAR_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc}")


@contextmanager
def temporary_database(backend: str, folder: Path) -> Iterator[str]:
    """Yield a migrated, empty database URL for ``backend`` ("sqlite" | "postgres")."""
    from core.db.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{folder / f'test-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(url)
        yield url
        return
    postgres_or_skip()
    name = f"avatars_test_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
