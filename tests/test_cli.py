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
    assert store.accounts.authenticate(key).account_id == acct
    # The key is stored hashed: the plaintext is nowhere in the database file.
    assert key.encode() not in (tmp_path / "avatars.db").read_bytes()

    run(capsys, "accounts", "set-plan", acct, "enterprise", "--max-concurrent", "200")
    limits = store.plans.limits(acct)
    assert limits.plan_key == "enterprise" and limits.max_concurrent_sessions == 200

    pack = run(capsys, "minutes", "add", acct, "250", "--note", "invoice 1")
    assert pack["minutes"] == 250 and store.sessions.usage(acct)["purchased_minutes"] == {"total": 250, "remaining": 250}

    second = run(capsys, "keys", "create", acct, "--label", "ci", "--test")
    assert second["api_key"].startswith("ah_test_")
    listed = run(capsys, "keys", "list", acct)
    assert len(listed) == 2 and all("api_key" not in k for k in listed)
    run(capsys, "keys", "revoke", second["api_key_id"])
    from core import errors
    import pytest

    with pytest.raises(errors.ApiKeyDeactivated):
        store.accounts.authenticate(second["api_key"])

    run(capsys, "plans", "set", "explorer", "--included-minutes", "400")
    plans = {p["key"]: p for p in run(capsys, "plans", "list")}
    assert plans["explorer"]["included_minutes"] == 400 and plans["free"]["allows_url_avatars"] is False
    assert [a["account_id"] for a in run(capsys, "accounts", "list")] == [acct]


def test_errors_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    assert main(["minutes", "add", "acct_missing", "5"]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------- avatarctl from another folder
def avatarctl(cwd, *argv, **env):
    """The installed `avatarctl` entry point, run as a user would, in ``cwd``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "avatarctl"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")} | env
    return subprocess.run([str(exe), *argv], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


def test_the_default_data_folder_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    from pathlib import Path

    import core
    from core.settings import Settings

    monkeypatch.delenv("AVATAR_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = Path(core.__file__).resolve().parents[1]
    assert Settings().data_dir == checkout / ".data"
    assert Settings().database_url == f"sqlite:///{checkout / '.data' / 'avatars.db'}"
    # An explicit relative folder is the user's choice: relative to where the command runs.
    monkeypatch.setenv("AVATAR_DATA_DIR", "here")
    assert Settings().data_dir == tmp_path / "here"


def test_avatarctl_from_another_folder(tmp_path):
    elsewhere, data = tmp_path / "elsewhere", tmp_path / "platform-data"
    elsewhere.mkdir()
    # A data folder that does not exist: a clear error naming it and AVATAR_DATA_DIR, no traceback,
    # and nothing created (no empty database in a surprising place).
    missing = tmp_path / "typo"
    r = avatarctl(elsewhere, "accounts", "list", AVATAR_DATA_DIR=str(missing))
    assert r.returncode == 2 and r.stdout == ""
    assert str(missing) in r.stderr and "AVATAR_DATA_DIR" in r.stderr and "Traceback" not in r.stderr
    assert not missing.exists() and list(elsewhere.iterdir()) == []
    # The same for an explicit SQLite URL whose folder is missing: it names AVATAR_DATABASE_URL.
    r = avatarctl(elsewhere, "plans", "list", AVATAR_DATABASE_URL=f"sqlite:///{missing}/x.db")
    assert r.returncode == 2 and "AVATAR_DATABASE_URL" in r.stderr and "Traceback" not in r.stderr
    # A database SQLite cannot open (a folder that takes no files): the error names it, no traceback.
    r = avatarctl(elsewhere, "plans", "list", AVATAR_DATABASE_URL="sqlite:////proc/avatars.db")
    assert r.returncode == 2 and "sqlite:////proc/avatars.db" in r.stderr and "unable to open" in r.stderr
    assert "Traceback" not in r.stderr

    # `db upgrade` creates the folder; every other command then works from any folder.
    r = avatarctl(elsewhere, "db", "upgrade", AVATAR_DATA_DIR=str(data))
    assert r.returncode == 0, r.stderr
    created = json.loads(avatarctl(elsewhere, "accounts", "create", "--name", "far", AVATAR_DATA_DIR=str(data)).stdout)
    listed = json.loads(avatarctl(tmp_path, "accounts", "list", AVATAR_DATA_DIR=str(data)).stdout)
    assert [a["account_id"] for a in listed] == [created["account_id"]]
    assert (data / "avatars.db").is_file() and list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------- avatarctl livekit token
def test_livekit_token_has_the_avatar_protocols_shape(capsys, monkeypatch):
    from livekit import api

    secret = "s" * 32
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", secret)
    assert main(["livekit", "token", "--room", "support-42", "--identity", "acme-avatar",
                 "--agent-identity", "agent-7", "--ttl", "600"]) == 0
    jwt = capsys.readouterr().out.strip()
    claims = api.TokenVerifier("devkey", secret).verify(jwt)  # signed with the key and secret given
    assert claims.identity == "acme-avatar" and claims.kind == "agent"
    assert claims.attributes == {"lk.publish_on_behalf": "agent-7"}
    grants = claims.video
    assert grants.room_join and grants.room == "support-42"
    assert grants.can_publish and grants.can_subscribe and grants.can_publish_data
    import jwt as pyjwt

    body = pyjwt.decode(jwt, options={"verify_signature": False})
    assert body["exp"] - body["nbf"] == 600
    # Another secret does not verify it; no key at all is a clear error, not a token.
    import pytest

    with pytest.raises(Exception):
        api.TokenVerifier("devkey", "x" * 32).verify(jwt)
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    with pytest.raises(SystemExit) as exc:
        main(["livekit", "token", "--room", "r", "--identity", "a"])
    assert "LIVEKIT_API_SECRET" in str(exc.value)


def test_say_without_a_platform_is_a_clear_error():
    import socket

    import pytest

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit) as exc:
        main(["say", "sess_x", "synth", "--token", "st_x", "--base-url", f"http://127.0.0.1:{port}"])
    assert f"ws://127.0.0.1:{port}/v1/ws" in str(exc.value) and "--base-url" in str(exc.value)

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
