"""``Idempotency-Key`` on create and upload-face (SPEC "Idempotency"), and what happens to a create whose
caller goes away.

With a key, the request runs in a task of its own, shielded from the caller: if the caller disconnects
or times out, the work still finishes and its response is kept (in the database, the body encrypted:
a create's body carries the session token), so a retry with the same key gets it. Without a key, a
create whose caller went away is abandoned (the scheduler ends it as client_gone, billing nothing).
Only final answers are kept: a 5xx, 429 or 409 releases the key so a retry runs again.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from core import errors
from core.security import fernet
from serve_app.deps import Services, error_response

log = logging.getLogger("avatars.api")

HEADER = "idempotency-key"
TTL_S = 24 * 3600
REPLAYED = "Idempotent-Replayed"


def fingerprint(value: Any) -> str:
    """A stable hash of what a request asks for (its parsed body; bytes hashed as themselves)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, (bytes, bytearray)):
            return {"sha256": hashlib.sha256(obj).hexdigest()}
        raise TypeError(type(obj).__name__)

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(32 <= ord(c) < 127 for c in key):
        raise errors.InvalidIdempotencyKey(details={"header": "Idempotency-Key"})
    return key


def _keep(status: int) -> bool:
    return status < 500 and status not in (409, 429)


async def run_idempotent(svc: Services, request: Request, account_id: str, route: str, request_hash: str,
                         run: Callable[[], Awaitable[Response]], *, lease_s: float) -> Response:
    """Run ``run`` once per (account, route, Idempotency-Key); without the header just run it."""
    key = idempotency_key(request)
    if key is None:
        return await run()
    store = svc.store.idempotency
    box = fernet(svc.settings.resolved_secret_key(), "idempotency")
    record = await asyncio.to_thread(store.begin, account_id, route, key, request_hash, lease_s=lease_s, ttl_s=TTL_S)
    if record is not None:  # a finished request's response, replayed
        assert record.response_body is not None and record.response_status is not None
        return Response(box.decrypt(record.response_body), status_code=record.response_status,
                        media_type="application/json", headers={REPLAYED: "true"})

    async def owned() -> Response:
        try:
            try:
                response = await run()
            except errors.ApiError as exc:
                response = error_response(exc)
        except BaseException:
            await asyncio.to_thread(store.release, account_id, route, key)
            raise
        if _keep(response.status_code):
            await asyncio.to_thread(store.finish, account_id, route, key, response.status_code,
                                    box.encrypt(bytes(response.body)))
        else:
            await asyncio.to_thread(store.release, account_id, route, key)
        return response

    # Shielded: a caller that goes away cancels only its wait, never the work or its record. Serve
    # cancels a disconnected request with ray.cancel(recursive=True), which also cancels the Ray calls the
    # request made (Ray finds the caller through a context variable): the work runs in a fresh context,
    # so the scheduler's create is not the request's child.
    work = asyncio.get_running_loop().create_task(owned(), context=contextvars.Context())
    return await asyncio.shield(work)
