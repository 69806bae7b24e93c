"""Holding an account's admission lock from a test: a create then waits inside the scheduler (in its
admission transaction) for as long as the test wants, on SQLite and PostgreSQL alike."""
from __future__ import annotations

from contextlib import contextmanager

from core.db.accounts import lock_account


@contextmanager
def account_lock(store, account_id: str):
    """SQLite: the database's write lock (BEGIN IMMEDIATE); PostgreSQL: the account row's lock."""
    with store.db.write() as s:
        lock_account(s, account_id)
        yield


@contextmanager
def warm_workers_paused(api, timeout: float = 60.0):
    """Pause (SIGSTOP) every warm worker of a deployment: a create that takes one then hangs in the
    worker's start until the block exits (SIGCONT), without holding any database lock. Yields the pool
    as [(session id, pid)], in pool order (a create takes the last)."""
    import os
    import signal

    import ray

    from tests.support.cluster import scheduler_handle, worker_handle
    from tests.support.waiting import wait_for

    ns = api.settings.ray_namespace
    size = api.settings.warm_pool_size
    ids = wait_for(lambda: (lambda p: p if len(p) == size else None)(
        ray.get(scheduler_handle(ns).stats.remote(), timeout=10)["warm_pool_ids"]), timeout=timeout, what="full pool")
    pids = [ray.get(worker_handle(ns, sid).ready.remote(), timeout=10)["pid"] for sid in ids]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield list(zip(ids, pids))
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
