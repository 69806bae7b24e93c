"""avatarctl against a real (SQLite) database: what an operator does."""
from __future__ import annotations

import json

from core.db.engine import Database
from core.db.store import Store
from ctl.main import main


def run(capsys, *argv) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_operator_workflow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    created = run(capsys, "accounts", "create", "--name", "acme", "--plan", "explorer")
    acct, key = created["account_id"], created["api_key"]
    assert acct.startswith("acct_") and key.startswith("ah_live_") and len(key) == 40
    store = Store(Database(f"sqlite:///{tmp_path / 'avatars.db'}"))
    assert store.authenticate(key).account_id == acct
    # The key is stored hashed: the plaintext is nowhere in the database file.
    assert key.encode() not in (tmp_path / "avatars.db").read_bytes()

    run(capsys, "accounts", "set-plan", acct, "enterprise", "--max-concurrent", "200")
    limits = store.limits(acct)
    assert limits.plan_key == "enterprise" and limits.max_concurrent_sessions == 200

    pack = run(capsys, "minutes", "add", acct, "250", "--note", "invoice 1")
    assert pack["minutes"] == 250 and store.usage(acct)["purchased_minutes"] == {"total": 250, "remaining": 250}

    second = run(capsys, "keys", "create", acct, "--label", "ci", "--test")
    assert second["api_key"].startswith("ah_test_")
    listed = run(capsys, "keys", "list", acct)
    assert len(listed) == 2 and all("api_key" not in k for k in listed)
    run(capsys, "keys", "revoke", second["api_key_id"])
    from core import errors
    import pytest

    with pytest.raises(errors.ApiKeyDeactivated):
        store.authenticate(second["api_key"])

    run(capsys, "plans", "set", "explorer", "--included-minutes", "400")
    plans = {p["key"]: p for p in run(capsys, "plans", "list")}
    assert plans["explorer"]["included_minutes"] == 400 and plans["free"]["allows_url_avatars"] is False
    assert [a["account_id"] for a in run(capsys, "accounts", "list")] == [acct]


def test_errors_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    assert main(["minutes", "add", "acct_missing", "5"]) == 2
    assert "not found" in capsys.readouterr().err


def test_webhooks_commands(tmp_path, monkeypatch, capsys):
    """create (secret once) → list → an event's delivery in the log → retry → delete; refused URLs."""
    from core.clock import utcnow
    from core.db.outbox import record_event

    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    acct = run(capsys, "accounts", "create", "--name", "hooks", "--no-key")["account_id"]
    assert main(["webhooks", "create", acct, "http://127.0.0.1:9/hook"]) == 2  # production rules: https only
    assert "https" in capsys.readouterr().err
    monkeypatch.setenv("AVATAR_ALLOW_LOOPBACK_WEBHOOK_URLS", "true")
    assert main(["webhooks", "create", acct, "http://10.0.0.1/hook"]) == 2  # still private
    capsys.readouterr()
    made = run(capsys, "webhooks", "create", acct, "http://127.0.0.1:9/hook", "--event", "avatar.deleted",
               "--description", "ops")
    assert made["secret"].startswith("whsec_") and made["events"] == ["avatar.deleted"]
    listed = run(capsys, "webhooks", "list", acct)
    assert [w["webhook_id"] for w in listed] == [made["webhook_id"]] and "secret" not in json.dumps(listed)
    store = Store(Database(f"sqlite:///{tmp_path / 'avatars.db'}"))
    with store.db.write() as s:
        record_event(s, acct, "avatar.deleted", {"avatar_id": "avat_x"}, utcnow())
        record_event(s, acct, "avatar.created", {"avatar_id": "avat_y"}, utcnow())  # not subscribed
    log = run(capsys, "webhooks", "deliveries", made["webhook_id"])
    assert [(d["type"], d["status"], d["attempts"]) for d in log] == [("avatar.deleted", "pending", 0)]
    retried = run(capsys, "webhooks", "retry", made["webhook_id"], log[0]["delivery_id"])
    assert retried["status"] == "pending" and retried["next_attempt_at"]
    assert run(capsys, "webhooks", "delete", made["webhook_id"])["deleted"] is True
    assert run(capsys, "webhooks", "list", acct) == []
    assert main(["webhooks", "deliveries", made["webhook_id"]]) == 2
