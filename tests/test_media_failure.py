"""A media path that fails ends its session within seconds as media_failed, with a detail, billed for
the time it ran (real Ray, real renderer, preview platform). The room adapters' own media failures
(LiveKit runner, Daily virtual devices) are covered in tests/rooms."""
from __future__ import annotations

import pytest
import ray

from tests.support.cluster import live_session_groups, worker_handle
from tests.support.ledger import assert_money_consistent
from tests.support.sessions import start_preview_session, wait_session_over
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(600)


def _break_renderer(worker) -> None:
    def boom(*_a, **_k):
        raise RuntimeError("GPU fell off the bus")

    worker._room.media.renderer.step = boom  # the process's renderer: its render loop now fails


def test_a_failing_render_loop_ends_the_session_as_media_failed(media_api):
    api = media_api
    tenant = api.tenant("growth")
    sid = start_preview_session(api, tenant)["session_id"]
    worker = worker_handle(api.settings.ray_namespace, sid)
    wait_for(lambda: ray.get(worker.info.remote(), timeout=10)["metrics"].get("frames", 0) > 0,
             timeout=60, what="frames rendered")
    ray.get(worker.__ray_call__.remote(_break_renderer), timeout=10)

    s = wait_session_over(api, tenant, sid, timeout=30, what="media_failed")
    assert s["status"] == "failed" and s["end_reason"] == "media_failed", s
    assert "GPU fell off the bus" in s["end_detail"] or "renderer keeps failing" in s["end_detail"]
    assert s["billing"]["minutes"] == 1  # the time it ran
    wait_for(lambda: sid not in live_session_groups(api.settings.ray_namespace), timeout=30, what="group removed")
    assert_money_consistent(api.store, [tenant.account_id])


def test_worker_killed_during_speech_ends_once_billed_once_and_leaves_nothing(media_api):
    import os
    import signal

    from media.renderer.speech import synth_speech
    from tests.support.faults import Target, settle

    api = media_api
    tenant = api.tenant("growth")
    sid = start_preview_session(api, tenant)["session_id"]
    worker = worker_handle(api.settings.ray_namespace, sid)
    speech = synth_speech(6.0, 16000, seed=3).audio.tobytes()
    ray.get(worker.push_audio.remote(speech, 16000), timeout=60)
    wait_for(lambda: any(e.get("type") == "playback.started"
                         for e in ray.get(worker.events.remote(0, 5.0), timeout=30)[1]), timeout=60,
             what="speech playing")
    os.kill(ray.get(worker.ready.remote(), timeout=10)["pid"], signal.SIGKILL)

    s = wait_session_over(api, tenant, sid, timeout=90, what="worker_failed")
    assert s["status"] == "failed" and s["end_reason"] == "worker_failed" and s["billing"]["minutes"] == 1
    found = settle(Target(settings=api.settings, http=api.http, store=api.store), [tenant.account_id])
    assert {k: v for k, v in found.items() if k != "settle_s"} == {
        "leaked_sessions": 0, "leaked_placement_groups": 0, "leaked_workers": 0, "double_billed": 0,
        "ledger_mismatches": 0}, found
