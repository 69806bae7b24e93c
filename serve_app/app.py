"""The HTTP API: a FastAPI ingress on Ray Serve.

Requests are authenticated and rate-limited in one middleware (so a bad key is a 401 before anything
else), read from the database directly, and go to the scheduler actor for anything that starts or
stops a worker. Every error leaves in the SPEC's envelope.

Run it with ``serve run serve_app.app:build_app`` (typed arguments: any ``Settings`` field) or through
``avatarctl run``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray import serve
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from core import errors, ids
from core.db.store import AuthResult
from core.look import validate_video
from core.security import secrets_equal
from core.settings import Settings
from core.status import AUTO_ASPECT_RATIO, PREVIEW_PLATFORM, PROXY_PLATFORM, SESSION_LIST_FILTERS
from core.views import session_view
from serve_app import avatars, contract, live, runtime, webhooks
from serve_app.contract import KEYED, errors_for, ok
from serve_app.deps import Services, account_of, error_response, services
from serve_app.idempotency import fingerprint, run_idempotent
from serve_app.schemas import CreateSessionBody, error_from_validation

log = logging.getLogger("avatars.api")

API_VERSION = "0.1.0"
PUBLIC_PATHS = ("/docs", "/openapi.json", "/healthz", "/docs/oauth2-redirect")
# Signed avatar image/preview URLs carry their own HMAC signature instead of an API key.
PUBLIC_PATH_PATTERNS = (avatars.SIGNED_PATH,)
ADMIN_PREFIX = "/v1/admin/"  # operator endpoints: their own token, no account key

api = FastAPI(
    title="Avatar sessions API",
    version=API_VERSION,
    description="Real-time talking avatars on Ray. Auth: `x-api-key` header. Errors use the envelope "
    "`{success: false, error: {code, message, suggestion?, details?}}` (401: `{error}`); validation "
    "problems are 400, never 422.",
    generate_unique_id_function=lambda route: route.name,  # operationId = the handler's name
)


def _openapi() -> dict[str, Any]:
    if api.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        api.openapi_schema = contract.finalize(get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes))
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]


# ====================================================================== errors → envelopes
@api.exception_handler(errors.ApiError)
async def _api_error(_: Request, exc: errors.ApiError) -> JSONResponse:
    return error_response(exc)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(error_from_validation(list(exc.errors())))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors, in the envelope, with their headers (``Allow`` on 405).
    FastAPI raises a bare 400 for a body it cannot decode (not UTF-8): that is ``INVALID_JSON``."""
    cls = {400: errors.InvalidJson, 404: errors.NotFound, 405: errors.MethodNotAllowed,
           413: errors.PayloadTooLarge}.get(exc.status_code)
    err: errors.ApiError
    if cls is None:
        err = errors.HttpError(str(exc.detail))
        err.status = exc.status_code
    else:
        err = cls(None if cls in (errors.InvalidJson, errors.MethodNotAllowed) else str(exc.detail))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names only the first matching route's methods
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(err, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (HEAD with GET, as Starlette does)."""
    scope = {**request.scope, "method": "\0"}
    methods: set[str] = set()
    for route in api.routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


@api.exception_handler(OperationalError)
async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
    # The database is unreachable (restarting, failing over): nothing was changed; try again shortly.
    log.warning("database unavailable: %s", type(exc.orig).__name__)
    return error_response(errors.ServiceUnavailable("The database is unavailable", retry_after_s=5))


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(errors.InternalError())


# ====================================================================== auth + rate limit
def relative_path(request: Request) -> str:
    """The path below the app's route prefix (Serve mounts an app under its prefix as root_path)."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


@api.middleware("http")
async def authenticate(request: Request, call_next):
    path = relative_path(request)
    if not path.startswith("/v1/") or path.startswith(PUBLIC_PATHS) or path.startswith(ADMIN_PREFIX) or any(
            p.match(path) for p in PUBLIC_PATH_PATTERNS):
        return await call_next(request)
    if path.endswith("/preview") and "token" in request.query_params and "x-api-key" not in request.headers:
        return await call_next(request)  # an <img> tag's preview URL: the route checks its token
    svc = services()
    try:
        auth = await svc.authenticate(request.headers.get("x-api-key"))
    except errors.AuthError as exc:
        return error_response(exc)
    except OperationalError as exc:  # handlers do not see what a middleware raises
        return await _database_down(request, exc)
    limit = auth.rate_limit_per_minute or svc.settings.rate_limit_per_minute  # plan / account override
    # None: the limiter is restarting; fail open, it must not take the API down.
    decision = await svc.rate_limit(auth.key_id, limit)
    headers = decision.headers() if decision else {}
    if decision is not None and not decision.allowed:
        return error_response(errors.RateLimited(retry_after_s=decision.retry_after(time.time())), headers)
    request.state.auth = auth
    response = await call_next(request)
    response.headers.update(headers)
    return response


# ====================================================================== playground (development page)
PLAYGROUND = Path(__file__).parent / "static" / "playground.html"
LIVEKIT_VIEWER = Path(__file__).parent / "static" / "livekit-viewer.js"


@api.get("/playground", include_in_schema=False)
async def playground() -> HTMLResponse:
    """Pick or upload a face, start a session, speak to it. The page asks for an API key and keeps it in
    the browser; it watches a preview session's MJPEG stream (where the preview platform is enabled) or
    joins a proxy session's LiveKit room as the caller (where the deployment has a LiveKit server)."""
    return HTMLResponse(PLAYGROUND.read_text())


@api.get("/playground/livekit-viewer.js", include_in_schema=False)
async def playground_livekit_viewer() -> FileResponse:
    """livekit-client bundled for the playground's LiveKit-room mode (built from web/ by `make web`), served
    here so the page fetches nothing from a CDN."""
    return FileResponse(LIVEKIT_VIEWER, media_type="text/javascript", headers={"cache-control": "max-age=3600"})


# ====================================================================== health
@api.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, Any]:
    return {"ok": True}


# ====================================================================== sessions
@api.post("/v1/sessions", status_code=201, tags=["sessions"], summary="Create and start a session",
          response_model=None,
          responses={**ok(contract.CreateSessionResponse, "Session created and started", 201,
                          links=contract.SESSION_LINKS),
                     **errors_for(*KEYED, 400, 403, 404, 409, 413, 415, codes={
                         400: "INVALID_AVATAR, INVALID_ASPECT_RATIO, INVALID_ROOM, INVALID_ROOM_PLATFORM, "
                              "INVALID_ROOM_URL, INVALID_METADATA, INVALID_JSON, ROOM_CONNECT_FAILED, face errors",
                         403: "PLAN_REQUIRES_AVATAR_ID, AVATAR_ACCESS_DENIED, INSUFFICIENT_MINUTES, AVATAR_LIMIT_REACHED",
                         404: "AVATAR_NOT_FOUND",
                         429: "RATE_LIMITED or CONCURRENCY_LIMIT_REACHED (details: current, max)",
                         503: "CAPACITY_UNAVAILABLE or SERVICE_UNAVAILABLE"})})
async def create_session(body: CreateSessionBody, request: Request) -> Response:
    svc, auth = services(request), account_of(request)
    if body.room.platform == PREVIEW_PLATFORM and not svc.settings.enable_preview_platform:
        raise errors.InvalidRoomPlatform()
    if body.room.platform == PROXY_PLATFORM and not svc.settings.livekit_configured:
        raise errors.InvalidRoomPlatform(
            "room platform proxy is not available: this deployment has no LiveKit server configured "
            "(AVATAR_LIVEKIT_URL, AVATAR_LIVEKIT_API_KEY, AVATAR_LIVEKIT_API_SECRET)")
    if body.video is not None:
        try:
            validate_video(body.video, max_side=svc.settings.video_max_side, max_fps=svc.settings.video_max_fps)
        except ValueError as exc:
            raise errors.ValidationFailed(str(exc), details={"field": "video"}) from None
    return await run_idempotent(svc, request, auth.account_id, "sessions.create",
                                fingerprint(body.model_dump(mode="json")),
                                lambda: _create_session(svc, auth, body), lease_s=_create_timeout(svc) + 30)


def _create_timeout(svc: Services) -> float:
    return svc.settings.placement_timeout_s + svc.settings.worker_start_timeout_s + 30


async def _create_session(svc: Services, auth: AuthResult, body: CreateSessionBody) -> JSONResponse:
    avatar = await resolve_avatar(svc, auth, body.avatar)
    aspect_ratio = avatar.orientation if body.aspect_ratio == AUTO_ASPECT_RATIO else body.aspect_ratio
    create_key = uuid.uuid4().hex
    try:
        result = await svc.scheduler.create_session(
            account_id=auth.account_id, avatar_id=avatar.id, aspect_ratio=aspect_ratio,
            metadata=body.metadata, room_platform=body.room.platform, room_url=body.room.url,
            room_token=body.room.token,
            room_options={"audio_participant": body.room.audio_participant} if body.room.audio_participant else {},
            background=body.background, video=body.video,
            create_key=create_key, timeout=_create_timeout(svc),
        )
        session = dict(result["session"], session_token=result["session_token"])
        if result.get("room"):  # proxy: the room's URL and the caller's token, only in this response
            session["room"] = result["room"]
        usage = result.get("usage") or await asyncio.to_thread(svc.store.sessions.admission_snapshot, auth.account_id)
    except (asyncio.CancelledError, errors.ServiceUnavailable) as exc:
        # The caller went away (Serve cancels a disconnected request) or will get a 503: nothing of
        # this create may keep running or bill. Submitted at once; the scheduler does the rest.
        if not isinstance(exc, errors.ClientGone):
            svc.scheduler.abandon_create(create_key)
        raise
    return JSONResponse(
        {"success": True, "session": session, "usage": usage, "message": "Session created successfully"},
        status_code=201,
    )


async def resolve_avatar(svc: Services, auth: AuthResult, avatar: str) -> Any:
    """The avatar row the account may use. URL/base64 avatars need a paid plan and the face pipeline."""
    if avatar.startswith(f"{ids.AVATAR}_"):
        return await asyncio.to_thread(svc.store.avatars.resolve_avatar_for_session, avatar, auth.account_id)
    limits = await asyncio.to_thread(svc.store.plans.limits, auth.account_id)
    if not limits.allows_url_avatars:
        raise errors.PlanRequiresAvatarId()
    return await avatars.avatar_from_create_value(svc, auth.account_id, avatar)


@api.get("/v1/sessions/{session_id}", tags=["sessions"], summary="Get a session", response_model=None,
         responses={**ok(contract.SessionResponse, "The session (duration is live)"),
                    **errors_for(*KEYED, 404, codes={404: "SESSION_NOT_FOUND (also other accounts' sessions)"})})
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    row = await asyncio.to_thread(svc.store.sessions.get_session, session_id, auth.account_id)
    return {"success": True, "session": session_view(row)}


@api.get("/v1/sessions", tags=["sessions"], summary="List sessions, newest first", response_model=None,
         responses={**ok(contract.SessionList, "One page of sessions; pass next_cursor as cursor for the next"),
                    **errors_for(*KEYED, 400, codes={400: "INVALID_QUERY, INVALID_CURSOR"})})
async def list_sessions(
    request: Request,
    # Checked here (not by FastAPI) so that a bad value is the SPEC's 400 INVALID_QUERY; the enum is
    # for the OpenAPI document.
    status: str = Query("all", description="all | active (created, started) | completed (ended, failed) "
                        "| one session status", json_schema_extra={"enum": list(SESSION_LIST_FILTERS)}),
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    if status not in SESSION_LIST_FILTERS:
        raise errors.InvalidQuery(f"status must be one of {', '.join(SESSION_LIST_FILTERS)}",
                                  details={"field": "status", "allowed": list(SESSION_LIST_FILTERS)})
    rows, next_cursor = await asyncio.to_thread(svc.store.sessions.list_sessions, auth.account_id, status, limit, cursor)
    return {"success": True, "sessions": [session_view(r) for r in rows], "next_cursor": next_cursor,
            "has_more": next_cursor is not None}


@api.post("/v1/sessions/{session_id}/end", tags=["sessions"], summary="End a session (idempotent)",
          response_model=None,
          responses={**ok(contract.SessionResponse, "The ended session with its billing"),
                     **errors_for(*KEYED, 404, codes={404: "SESSION_NOT_FOUND"})})
async def end_session(session_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    view, ended_now = await svc.scheduler.end_for_account(session_id, auth.account_id)
    return {"success": True, "session": view, "message": "Session ended" if ended_now else "Session already ended"}


# ====================================================================== avatars (serve_app/avatars.py)
api.include_router(avatars.router)
api.include_router(live.router)
api.include_router(webhooks.router)


# ====================================================================== usage
@api.get("/v1/usage", tags=["usage"], summary="Minutes, concurrency and plan of this account", response_model=None,
         responses={**ok(contract.UsageResponse, "This account's usage"), **errors_for(*KEYED)})
async def usage(request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    return {"success": True, "usage": await asyncio.to_thread(svc.store.sessions.usage, auth.account_id)}


# ====================================================================== operators
# Operator endpoint: absent from the public contract (it does not exist for anyone without the token).
@api.get("/v1/admin/capacity", tags=["admin"], summary="Session slots per node, warm pool, running sessions",
         include_in_schema=False)
async def capacity(request: Request) -> dict[str, Any]:
    svc = services(request)
    token = svc.settings.admin_token
    if not token or not secrets_equal(request.headers.get("x-admin-token", ""), token):
        raise errors.NotFound()  # operator endpoints do not exist for anyone without the token
    stats = await svc.scheduler.stats(timeout=10.0)
    return {"success": True, "capacity": stats["capacity"], "warm_pool": stats["warm_pool"],
            "running": stats["running"], "refusals": stats["refusals"]}


# ====================================================================== the Serve deployment
@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
@serve.ingress(api)
class ApiIngress:
    def __init__(self, settings: Settings) -> None:
        runtime.services = Services(settings)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder: ``args`` are ``Settings`` fields (``serve run ... key=value``)."""
    from core.db.migrate import upgrade

    settings = Settings(**(args or {}))
    settings.resolved_secret_key()
    upgrade(settings.database_url)
    # (mypy does not apply class decorators: @serve.deployment made ApiIngress a Deployment)
    return ApiIngress.options(num_replicas=settings.api_replicas).bind(settings)  # type: ignore[attr-defined]
