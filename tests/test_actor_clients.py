"""How every call to a singleton actor ends (actors.clients.ActorClient), without Ray actors: the typed
error of the actor comes back as itself, a database outage and a lost actor are 503s."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.exceptions import RayActorError, RayTaskError
from sqlalchemy.exc import OperationalError

from actors.clients import LimiterClient, SchedulerClient
from core import errors
from core.policy.rate_limit import Lease
from core.status import EndReason


class _Method:
    def __init__(self, outcome: Any, calls: list[tuple[Any, ...]]) -> None:
        self.outcome, self.calls = outcome, calls

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        outcome = self.outcome

        async def answer() -> Any:
            if outcome == "hang":
                await asyncio.Event().wait()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return answer()


class FakeHandle:
    """An actor handle whose every method answers ``outcome`` (a value, an exception, or "hang")."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.outcome, self.calls)


def _task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("Scheduler.end_session", "Traceback ...", cause)


def test_answers_and_arguments_pass_through():
    lease = Lease(window=1, limit=10, granted=3, remaining=7, reset_at=60)
    limiter = FakeHandle(lease)
    assert asyncio.run(LimiterClient(limiter).lease("key", 3, 10)) == lease
    assert limiter.calls == [(("key", 3, 10), {})]
    scheduler = FakeHandle({"session_id": "sess_1"})
    asyncio.run(SchedulerClient(scheduler).end_session("sess_1", EndReason.WS_CLOSED))
    assert scheduler.calls == [(("sess_1", "ws_closed"), {})]


def test_the_actors_typed_error_comes_back_as_itself():
    lost: list[int] = []
    client = SchedulerClient(FakeHandle(_task_error(errors.SessionNotFound())), on_lost=lambda: lost.append(1))
    with pytest.raises(errors.SessionNotFound):
        asyncio.run(client.end_session("sess_1"))
    assert lost == []  # the actor answered: its handle stays


def test_a_database_outage_is_a_503_to_retry_in_5_s():
    client = SchedulerClient(FakeHandle(_task_error(OperationalError("SELECT 1", {}, Exception("down")))))
    with pytest.raises(errors.ServiceUnavailable) as info:
        asyncio.run(client.stats())
    assert info.value.retry_after_s == 5 and "database" in info.value.message


def test_other_failures_of_the_actor_are_not_hidden():
    client = SchedulerClient(FakeHandle(_task_error(KeyError("bug"))))
    with pytest.raises(RayTaskError):
        asyncio.run(client.stats())


@pytest.mark.parametrize("outcome", [RayActorError(), "hang"], ids=["actor_died", "timeout"])
def test_a_lost_actor_refetches_the_handles_and_is_a_503_to_retry_in_2_s(outcome):
    lost: list[int] = []
    client = SchedulerClient(FakeHandle(outcome), on_lost=lambda: lost.append(1))
    with pytest.raises(errors.ServiceUnavailable) as info:
        asyncio.run(client.stats(timeout=0.2))
    assert info.value.retry_after_s == 2 and info.value.status == 503
    assert lost == [1]
