"""The OpenAPI document is the contract: schemathesis (every check, a fixed seed, a bounded number of
examples, the stateful phase through the document's links) against the real app on Serve, 0 failures.
Plus the document's own promises (no 422, the security scheme, the error envelopes) and ``Allow`` on 405."""
from __future__ import annotations

import base64
import json
import os

import pytest

from tests.support import faces

SEED = 20260101
MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def contract_app(ray_cluster, tmp_path_factory, face_models):
    from tests.conftest import deploy, make_settings, teardown
    from tests.support.databases import temporary_database

    folder = tmp_path_factory.mktemp("api-contract")
    with temporary_database("sqlite", folder) as url:
        settings = make_settings(folder, "contract", url, warm_pool_size=1, placement_timeout_s=1.0,
                                 allow_loopback_webhook_urls=True)
        app = deploy(ray_cluster, settings, "api-contract")
        yield app
        teardown(settings, "api-contract")
        app.store.db.dispose()


def test_document_declares_envelopes_security_and_no_422(contract_app):
    doc = contract_app.http.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key",
        "description": doc["components"]["securitySchemes"]["ApiKeyAuth"]["description"]}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)
            success = [s for s in responses if s.startswith("2")]
            assert success and all(responses[s].get("content") for s in success), (method, path)
            for status, resp in responses.items():
                if status.startswith(("4", "5")) and status != "401":
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorEnvelope"), (method, path, status)
            if op["security"]:
                assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/AuthErrorBody")
    upload = doc["paths"]["/v1/avatars/upload-face"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data", "application/json"}
    assert doc["paths"]["/v1/avatars/{avatar_id}/image"]["get"]["security"] == []
    assert contract_app.http.get("/docs").status_code == 200


def test_method_not_allowed_says_allow(contract_app):
    tenant = contract_app.tenant()
    r = contract_app.http.delete("/v1/sessions", headers=tenant.headers)
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize("body", [b"\xff\xfe{\x00", b'{"avatar": "\xe9"}', b"{not json", b"[1,", b"\x00"])
@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/avatars/upload-face"])
def test_bodies_that_are_not_utf8_json_are_400_invalid_json(contract_app, path, body):
    tenant = contract_app.tenant()
    r = contract_app.http.post(path, content=body, headers={**tenant.headers, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_JSON"
    assert contract_app.store.sessions.list_sessions(tenant.account_id)[0] == []


def _contract_under_test(doc: dict, avatar_id: str, face_b64: str) -> dict:
    """The live document with three fields narrowed to values that exist here (an avatar id, a photo
    with one face, a webhook URL this deployment accepts): valid for the contract, and they let the
    stateful phase follow create -> get/end, upload-face -> delete and webhook -> deliveries/delete.
    Everything else is tested as published."""
    doc = json.loads(json.dumps(doc))
    doc["components"]["schemas"]["CreateSessionBody"]["properties"]["avatar"] = {"type": "string",
                                                                                 "enum": [avatar_id]}
    json_body = doc["paths"]["/v1/avatars/upload-face"]["post"]["requestBody"]["content"]["application/json"]
    json_body["schema"]["oneOf"][1]["properties"]["image_base64"] = {"type": "string", "enum": [face_b64]}
    json_body["schema"]["oneOf"] = json_body["schema"]["oneOf"][1:]  # URLs: the url-fetch tests (no network here)
    json_body.pop("examples", None)
    doc["components"]["schemas"]["CreateWebhookBody"]["properties"]["url"] = {
        "type": "string", "enum": ["http://127.0.0.1:9/hook"]}  # nothing listens: deliveries just retry
    return doc


@pytest.mark.timeout(600)
def test_schemathesis_all_checks_stateful_zero_failures(contract_app, tmp_path, capsys, monkeypatch):
    from schemathesis.cli import schemathesis as st_cli

    monkeypatch.chdir(tmp_path)  # its caches (.hypothesis, .schemathesis) stay out of the work tree

    tenant = contract_app.tenant("explorer", max_concurrent_sessions=3)
    avatar_id = contract_app.public_avatar()
    face_b64 = base64.b64encode(faces.encode(faces.grace())).decode()
    doc = _contract_under_test(contract_app.http.get("/openapi.json").json(), avatar_id, face_b64)
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(doc))
    # Which answers a valid request may get. A schema cannot say whether a photo shows exactly one face
    # or an image URL can be fetched: for upload-face, content decides (400 NO_FACE_DETECTED, 413, 415);
    # nor whether an opaque cursor is one this API issued (400 INVALID_CURSOR), nor whether a webhook
    # URL's host resolves to a public address (400 WEBHOOK_URL_NOT_ALLOWED), nor whether this deployment
    # has a LiveKit server for room platform proxy (400 INVALID_ROOM_PLATFORM: this one has none).
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""
seed = {SEED}
[generation]
max-examples = {MAX_EXAMPLES}
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "429"]
[[operations]]
include-operation-id = "upload_face"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "413", "415", "429"]
[[operations]]
include-operation-id = "create_webhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "429"]
[[operations]]
include-operation-id = "create_session"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
[[operations]]
include-operation-id = "list_sessions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "429"]
""")
    args = ["--config-file", str(config), "--no-color", "run", str(schema_file), "--url", contract_app.base_url,
            "--checks", "all", "--phases", os.environ.get("AVATAR_TEST_ST_PHASES", "examples,coverage,fuzzing,stateful"),
            "--workers", "1",
            "-H", f"x-api-key:{tenant.api_key}", "--request-timeout", "90",
            "--suppress-health-check", "too_slow,filter_too_much", "--max-time", "120"]
    try:
        st_cli.main(args, prog_name="st", standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    with capsys.disabled():  # the run's summary goes to the terminal (CI's output), failing or not
        summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
        print(f"\nschemathesis (seed {SEED}, {MAX_EXAMPLES} examples per operation):\n{summary}")
    assert code == 0, out[-6000:]


def _padded_jpeg(jpeg: bytes, size: int) -> bytes:
    """The same JPEG grown to ``size`` bytes with comment segments (decoders skip them)."""
    assert jpeg[:2] == b"\xff\xd8"
    pad, left = bytearray(), size - len(jpeg)
    while left > 0:
        n = min(65533, left - 4)
        assert n >= 0
        pad += b"\xff\xfe" + (n + 2).to_bytes(2, "big") + b"c" * n
        left -= n + 4
    out = jpeg[:2] + bytes(pad) + jpeg[2:]
    assert len(out) == size
    return out


def test_upload_size_is_checked_on_decoded_bytes(contract_app):
    """SPEC: max 10 MB decoded. 9.9 MB sent as base64 JSON (13.2 MB on the wire) is accepted; one byte
    over 10 MB decoded is 413 IMAGE_TOO_LARGE, however it is sent, and nothing is stored."""
    from serve_app.avatars import MAX_IMAGE_BYTES

    tenant = contract_app.tenant("explorer")
    face = faces.encode(faces.grace())
    big = _padded_jpeg(face, int(9.9 * 1024 * 1024))
    r = contract_app.http.post("/v1/avatars/upload-face", json={"image_base64": base64.b64encode(big).decode()},
                               headers=tenant.headers, timeout=120)
    assert r.status_code == 201, r.text[:500]
    assert r.json()["avatar_id"].startswith("avat_")

    over = _padded_jpeg(face, MAX_IMAGE_BYTES + 1)
    r = contract_app.http.post("/v1/avatars/upload-face", json={"image_base64": base64.b64encode(over).decode()},
                               headers=tenant.headers, timeout=120)
    assert r.status_code == 413 and r.json()["error"]["code"] == "IMAGE_TOO_LARGE", r.text[:500]
    r = contract_app.http.post("/v1/avatars/upload-face", files={"file": ("big.jpg", over, "image/jpeg")},
                               headers=tenant.headers, timeout=120)
    assert r.status_code == 413 and r.json()["error"]["code"] == "IMAGE_TOO_LARGE", r.text[:500]
    _, mine = contract_app.store.avatars.list_avatars(tenant.account_id)
    assert len(mine) == 1
