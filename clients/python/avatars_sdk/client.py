"""Sync and async clients on httpx. Every endpoint is written once (``_Endpoints``): it builds a ``_Call``
and hands it to the client's ``_execute``, which returns the parsed model (sync) or an awaitable of it
(async)."""
from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
from pydantic import BaseModel

from . import models
from ._retry import RetryPolicy
from .errors import APIConnectionError, APIError, AvatarsError, error_from_response

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = "avatars-sdk-python/0.1.0"
ImageSource = str | os.PathLike | bytes


@dataclass
class _Call:
    method: str
    path: str
    model: type[BaseModel] | None = None
    unwrap: str | None = None  # return body[unwrap] parsed as ``model``
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, Any] | None = None
    replay_safe: bool = True  # may be sent twice without a second effect
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.idempotency_key:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def parse(self, response: httpx.Response) -> Any:
        body = response.json() if response.content else {}
        if self.unwrap:
            body = body[self.unwrap]
        return self.model.model_validate(body) if self.model else body


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_from_response(response.status_code, response.headers, body)


def _room(room: dict[str, Any] | None, platform: str | None, url: str | None, token: str | None) -> dict[str, Any]:
    if room is not None:
        return room
    if platform in (None, "proxy"):
        return {"platform": "proxy"}
    return {"platform": platform, "url": url, "token": token}


def _upload_call(source: ImageSource, filename: str | None, idempotency_key: str | None) -> _Call:
    """upload-face from bytes, a path, an http(s) URL or a base64 string / data URI."""
    key = idempotency_key or str(uuid.uuid4())
    call = _Call("POST", "/v1/avatars/upload-face", models.UploadFaceResponse, idempotency_key=key)
    if isinstance(source, (bytes, bytearray, memoryview)):
        call.files = {"file": (filename or "face.jpg", bytes(source))}
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        call.json = {"image_url": source}
    elif isinstance(source, str) and source.startswith("data:"):
        call.json = {"image_base64": source}
    else:
        path = Path(source)
        call.files = {"file": (filename or path.name, path.read_bytes())}
    return call


class _Endpoints:
    """Every endpoint of the API, once. ``_execute`` is the client's (sync or async)."""

    def _execute(self, call: _Call) -> Any:  # pragma: no cover - defined by the clients
        raise NotImplementedError

    # Sessions
    def create_session(self, avatar: str, *, room: dict[str, Any] | None = None, platform: str | None = None,
                       url: str | None = None, token: str | None = None, aspect_ratio: str = "4:3",
                       metadata: dict[str, Any] | None = None,
                       idempotency_key: str | None = None) -> models.CreateSessionResponse:
        """Create and start a session. ``room`` as a dict, or ``platform``/``url``/``token``; neither means
        ``{"platform": "proxy"}``. One Idempotency-Key per call, reused by its retries: a retry after a
        dropped response returns the first session, never a second one."""
        body = {"avatar": avatar, "aspect_ratio": aspect_ratio, "room": _room(room, platform, url, token),
                "metadata": metadata or {}}
        return self._execute(_Call("POST", "/v1/sessions", models.CreateSessionResponse, json=body,
                                   idempotency_key=idempotency_key or str(uuid.uuid4())))

    def get_session(self, session_id: str) -> models.SessionObject:
        return self._execute(_Call("GET", f"/v1/sessions/{session_id}", models.SessionObject, unwrap="session"))

    def list_sessions(self, *, status: str = "all", limit: int = 20,
                      cursor: str | None = None) -> models.SessionList:
        params = {"status": status, "limit": limit, **({"cursor": cursor} if cursor else {})}
        return self._execute(_Call("GET", "/v1/sessions", models.SessionList, params=params))

    def end_session(self, session_id: str) -> models.SessionObject:
        """End a session (idempotent: ending an ended session returns it unchanged)."""
        return self._execute(_Call("POST", f"/v1/sessions/{session_id}/end", models.SessionObject, unwrap="session"))

    def create_preview_token(self, session_id: str) -> models.PreviewTokenResponse:
        return self._execute(_Call("POST", f"/v1/sessions/{session_id}/preview-token", models.PreviewTokenResponse))

    def get_usage(self) -> models.Usage:
        return self._execute(_Call("GET", "/v1/usage", models.Usage, unwrap="usage"))

    # Avatars
    def upload_face(self, source: ImageSource, *, filename: str | None = None,
                    idempotency_key: str | None = None) -> models.UploadFaceResponse:
        """Upload a face from a path, bytes, an http(s) URL or a data URI (base64)."""
        return self._execute(_upload_call(source, filename, idempotency_key))

    def list_avatars(self) -> models.AvatarList:
        return self._execute(_Call("GET", "/v1/avatars", models.AvatarList))

    def delete_avatar(self, avatar_id: str) -> models.AvatarDeleted:
        return self._execute(_Call("DELETE", f"/v1/avatars/{avatar_id}", models.AvatarDeleted))

    def download(self, signed_url: str) -> bytes:
        """The bytes behind a signed ``image_url`` / ``preview_url`` (no API key needed)."""
        return self._execute(_Call("GET", signed_url, None, headers={"accept": "image/*"}, unwrap="__bytes__"))

    # Webhooks
    def create_webhook(self, url: str, *, events: list[str] | None = None,
                       description: str | None = None) -> models.CreatedWebhook:
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = events
        if description is not None:
            body["description"] = description
        return self._execute(_Call("POST", "/v1/webhooks", models.CreatedWebhook, json=body, replay_safe=False))

    def list_webhooks(self) -> models.WebhookList:
        return self._execute(_Call("GET", "/v1/webhooks", models.WebhookList))

    def delete_webhook(self, webhook_id: str) -> models.WebhookDeleted:
        return self._execute(_Call("DELETE", f"/v1/webhooks/{webhook_id}", models.WebhookDeleted))

    def list_deliveries(self, webhook_id: str) -> models.DeliveryList:
        return self._execute(_Call("GET", f"/v1/webhooks/{webhook_id}/deliveries", models.DeliveryList))

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> models.DeliveryRetried:
        return self._execute(_Call("POST", f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
                                   models.DeliveryRetried))

    def ws_url(self) -> str:
        base = str(self._http.base_url).rstrip("/")  # type: ignore[attr-defined]
        return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/ws"


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    base_url = base_url or os.environ.get("AVATARS_BASE_URL") or DEFAULT_BASE_URL
    api_key = api_key or os.environ.get("AVATARS_API_KEY")
    if not api_key:
        raise AvatarsError("an API key is required: pass api_key= or set AVATARS_API_KEY")
    return base_url.rstrip("/"), api_key


def _retry_delay(policy: RetryPolicy, exc: Exception, attempt: int, call: _Call) -> float:
    """How long to wait before retrying ``call`` after ``exc``; raises the typed error when not retrying."""
    error = APIConnectionError(str(exc) or type(exc).__name__) if isinstance(exc, httpx.TransportError) else exc
    if not policy.should_retry(error, attempt, call.replay_safe):
        if error is exc:
            raise exc
        raise error from exc
    return policy.delay(error, attempt)


def _result(call: _Call, response: httpx.Response) -> Any:
    return response.content if call.unwrap == "__bytes__" else call.parse(response)


class AvatarsClient(_Endpoints):
    """Synchronous client. ``with AvatarsClient(base_url=..., api_key=...) as client: ...``"""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, http_client: httpx.Client | None = None,
                 sleep=time.sleep) -> None:
        base_url, api_key = _settings(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = http_client or httpx.Client(timeout=timeout)
        self._http.base_url = base_url
        self._http.headers.update({"x-api-key": api_key, "user-agent": USER_AGENT})

    def _execute(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, params=call.params, json=call.json,
                                              files=call.files, headers=call.request_headers())
                _raise_for(response)
                return _result(call, response)
            except (httpx.TransportError, APIError) as exc:
                self._sleep(_retry_delay(self.retry, exc, attempt, call))
                attempt += 1

    def iter_sessions(self, *, status: str = "all", page_size: int = 20) -> Iterator[models.SessionObject]:
        """Every session, newest first, following ``next_cursor``."""
        cursor = None
        while True:
            page = self.list_sessions(status=status, limit=page_size, cursor=cursor)
            yield from page.sessions
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def connect(self, session_id: str, session_token: str, **kwargs):
        """The session WebSocket (sync): ``with client.connect(sid, token) as ws: ws.send_audio(...)``."""
        from .ws import SessionSocket

        return SessionSocket(self.ws_url(), session_id, session_token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AvatarsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncAvatarsClient(_Endpoints):
    """Asynchronous client: the same methods, awaited. ``async with AsyncAvatarsClient(...) as client:``"""

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, http_client: httpx.AsyncClient | None = None,
                 sleep=asyncio.sleep) -> None:
        base_url, api_key = _settings(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._http.base_url = base_url
        self._http.headers.update({"x-api-key": api_key, "user-agent": USER_AGENT})

    async def _execute(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                                    files=call.files, headers=call.request_headers())
                _raise_for(response)
                return _result(call, response)
            except (httpx.TransportError, APIError) as exc:
                await self._sleep(_retry_delay(self.retry, exc, attempt, call))
                attempt += 1

    async def iter_sessions(self, *, status: str = "all", page_size: int = 20) -> AsyncIterator[models.SessionObject]:
        cursor = None
        while True:
            page = await self.list_sessions(status=status, limit=page_size, cursor=cursor)
            for session in page.sessions:
                yield session
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def connect(self, session_id: str, session_token: str, **kwargs):
        """The session WebSocket: ``async with client.connect(sid, token) as ws: ...``."""
        from .ws import AsyncSessionSocket

        return AsyncSessionSocket(self.ws_url(), session_id, session_token, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncAvatarsClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def encode_image_base64(data: bytes, mime: str = "image/jpeg") -> str:
    """A data URI for ``upload_face`` or for ``create_session(avatar=...)`` on paid plans."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
