"""Webhook endpoints of an account (SPEC "Webhooks"): create (the secret is shown once), list, delete,
the deliveries log and a manual retry. Delivery itself is the ``avatar-webhooks`` actor's job."""
from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from core.db.webhook_store import endpoint_view
from core.policy.webhooks import EVENT_TYPES
from pipelines.faces.url_fetch import check_webhook_url
from serve_app.contract import KEYED, errors_for, ok
from serve_app.deps import account_of, services

router = APIRouter(tags=["webhooks"])

_URL_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}


class CreateWebhookBody(BaseModel):
    url: Annotated[Any, WithJsonSchema(_URL_SCHEMA)] = Field(
        description="https URL on a public address (redirects are not followed)")
    events: Annotated[Any, WithJsonSchema({"type": "array", "items": {"enum": list(EVENT_TYPES)}})] = Field(
        default_factory=list, description="Event types to receive; empty = all")
    description: Annotated[Any, WithJsonSchema({"type": "string", "maxLength": 500})] = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or len(v) > 2000:
            raise PydanticCustomError("INVALID_WEBHOOK", "url must be an http(s) URL of at most 2000 characters")
        return v.strip()

    @field_validator("events")
    @classmethod
    def _events(cls, v: Any) -> list[str]:
        if not isinstance(v, list) or any(e not in EVENT_TYPES for e in v):
            raise PydanticCustomError("INVALID_WEBHOOK", "events must be a list of: " + ", ".join(EVENT_TYPES))
        return v

    @field_validator("description")
    @classmethod
    def _description(cls, v: Any) -> str:
        if not isinstance(v, str) or len(v) > 500:
            raise PydanticCustomError("INVALID_WEBHOOK", "description must be a string of at most 500 characters")
        return v


# ====================================================================== response models
class WebhookObject(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why delivery stopped (repeated failures)")
    created_at: str | None


class CreatedWebhook(BaseModel):
    success: Literal[True]
    webhook: WebhookObject
    secret: str = Field(description="whsec_...: verifies signatures; shown only here")


class WebhookList(BaseModel):
    success: Literal[True]
    webhooks: list[WebhookObject]


class WebhookDeleted(BaseModel):
    success: Literal[True]
    webhook_id: str
    deleted: Literal[True]


class DeliveryObject(BaseModel):
    delivery_id: str
    event_id: str = Field(description="The webhook-id header (the same on every retry)")
    type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str | None
    delivered_at: str | None


class DeliveryList(BaseModel):
    success: Literal[True]
    deliveries: list[DeliveryObject]


class DeliveryRetried(BaseModel):
    success: Literal[True]
    delivery: DeliveryObject


# Links for the contract's stateful phase: a created endpoint → its deliveries and its deletion.
WEBHOOK_LINKS = {
    "ListDeliveries": {"operationId": "list_deliveries", "parameters": {"webhook_id": "$response.body#/webhook/webhook_id"}},
    "DeleteWebhook": {"operationId": "delete_webhook", "parameters": {"webhook_id": "$response.body#/webhook/webhook_id"}},
}
_NOT_FOUND = {404: "WEBHOOK_NOT_FOUND"}


@router.post("/v1/webhooks", status_code=201, summary="Add a webhook endpoint (the secret is shown once)",
             response_model=None,
             responses={**ok(CreatedWebhook, "The endpoint and its signing secret", 201, links=WEBHOOK_LINKS),
                        **errors_for(*KEYED, 400, 403, codes={400: "INVALID_WEBHOOK, WEBHOOK_URL_NOT_ALLOWED, INVALID_JSON",
                                                             403: "WEBHOOK_LIMIT_REACHED"})})
async def create_webhook(body: CreateWebhookBody, request: Request) -> JSONResponse:
    svc, auth = services(request), account_of(request)
    await asyncio.to_thread(check_webhook_url, body.url, allow_loopback=svc.settings.allow_loopback_webhook_urls)
    row = await asyncio.to_thread(svc.webhook_store.create_endpoint, auth.account_id, body.url, body.events,
                                  body.description)
    return JSONResponse({"success": True, "webhook": endpoint_view(row), "secret": row.secret}, status_code=201)


@router.get("/v1/webhooks", summary="This account's webhook endpoints", response_model=None,
            responses={**ok(WebhookList, "The endpoints (secrets are never returned)"), **errors_for(*KEYED)})
async def list_webhooks(request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    rows = await asyncio.to_thread(svc.webhook_store.list_endpoints, auth.account_id)
    return {"success": True, "webhooks": [endpoint_view(r) for r in rows]}


@router.delete("/v1/webhooks/{webhook_id}", summary="Delete a webhook endpoint (pending deliveries are dropped)",
               response_model=None,
               responses={**ok(WebhookDeleted, "Deleted"), **errors_for(*KEYED, 404, codes=_NOT_FOUND)})
async def delete_webhook(webhook_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    row = await asyncio.to_thread(svc.webhook_store.delete_endpoint, webhook_id, auth.account_id)
    return {"success": True, "webhook_id": row.id, "deleted": True}


@router.get("/v1/webhooks/{webhook_id}/deliveries", summary="The endpoint's deliveries, newest first",
            response_model=None,
            responses={**ok(DeliveryList, "Attempts, status codes, next retry"),
                       **errors_for(*KEYED, 404, codes=_NOT_FOUND)})
async def list_deliveries(webhook_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    rows = await asyncio.to_thread(svc.webhook_store.list_deliveries, webhook_id, auth.account_id)
    return {"success": True, "deliveries": rows}


@router.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
             summary="Send a delivery again now (a disabled endpoint is enabled again)", response_model=None,
             responses={**ok(DeliveryRetried, "Queued"), **errors_for(*KEYED, 404, codes=_NOT_FOUND)})
async def retry_delivery(webhook_id: str, delivery_id: str, request: Request) -> dict[str, Any]:
    svc, auth = services(request), account_of(request)
    view = await asyncio.to_thread(svc.webhook_store.retry_delivery, webhook_id, delivery_id, auth.account_id)
    try:
        await svc.webhooks.wake(timeout=2.0)
    except Exception:  # noqa: BLE001 - it polls anyway
        pass
    return {"success": True, "delivery": view}
