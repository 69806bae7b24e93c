"""``AvatarStore.upload_precheck``: upload-face's early checks in one database read, in the order the
endpoint had them as separate reads (plan includes uploads? -> the bytes' own checks -> same bytes already
uploaded? -> quota), on SQLite and PostgreSQL. No Ray."""
from __future__ import annotations

import hashlib

import pytest

from core import errors, ids
from core.clock import utcnow
from core.db.engine import Database
from core.db.models import Avatar
from core.db.store import Store
from tests.conftest import BACKENDS
from tests.support.databases import temporary_database


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with temporary_database(request.param, tmp_path) as url:
        store = Store(Database(url))
        yield store
        store.db.dispose()


def _upload(store: Store, account_id: str, data: bytes) -> Avatar:
    row = Avatar(id=ids.new_id(ids.AVATAR), account_id=account_id, is_public=False, orientation="3:4",
                 content_sha256=hashlib.sha256(data).hexdigest(), created_at=utcnow())
    [(kept, created)] = store.avatars.add_avatars_deduplicated([row], enforce_quota=True)
    assert created
    return kept


class Hasher:
    """The caller's ``content_hash``: counts its calls; raises ``error`` (the bytes' typed refusal)."""

    def __init__(self, data: bytes, error: Exception | None = None) -> None:
        self.data, self.error, self.calls = data, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return hashlib.sha256(self.data).hexdigest()


def test_new_bytes_pass_and_known_bytes_return_their_avatar(store):
    account = store.accounts.create_account("precheck", "explorer").id
    assert store.avatars.upload_precheck(account, Hasher(b"one"), enforce_quota=True) is None
    first = _upload(store, account, b"one")
    found = store.avatars.upload_precheck(account, Hasher(b"one"), enforce_quota=True)
    assert found is not None and found.id == first.id
    other = store.accounts.create_account("other", "explorer").id  # dedupe is per account
    assert store.avatars.upload_precheck(other, Hasher(b"one"), enforce_quota=True) is None


def test_plan_without_uploads_refuses_before_looking_at_the_bytes(store):
    account = store.accounts.create_account("precheck", "explorer").id
    store.accounts.set_plan(account, "explorer", avatar_uploads=0)
    bad = Hasher(b"x", errors.UnsupportedImage())
    with pytest.raises(errors.AvatarLimitReached) as exc:
        store.avatars.upload_precheck(account, bad, enforce_quota=True)
    assert exc.value.details == {"used": 0, "limit": 0} and bad.calls == 0
    # Not enforced (an operator's import): the bytes' own refusal.
    with pytest.raises(errors.UnsupportedImage):
        store.avatars.upload_precheck(account, bad, enforce_quota=False)


def test_bytes_refusal_comes_before_the_quota_and_a_known_image_before_both(store):
    account = store.accounts.create_account("precheck", "explorer").id
    store.accounts.set_plan(account, "explorer", avatar_uploads=1)
    first = _upload(store, account, b"one")  # the period's one upload is used
    with pytest.raises(errors.UnsupportedImage):
        store.avatars.upload_precheck(account, Hasher(b"bad", errors.UnsupportedImage()), enforce_quota=True)
    found = store.avatars.upload_precheck(account, Hasher(b"one"), enforce_quota=True)
    assert found is not None and found.id == first.id  # the same bytes again count nothing: not refused
    with pytest.raises(errors.AvatarLimitReached) as exc:
        store.avatars.upload_precheck(account, Hasher(b"two"), enforce_quota=True)
    assert exc.value.details == {"used": 1, "limit": 1}
    assert store.avatars.upload_precheck(account, Hasher(b"two"), enforce_quota=False) is None
