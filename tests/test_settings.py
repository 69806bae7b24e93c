"""The typed configuration refuses what it does not know and what does not fit together."""
from __future__ import annotations

import pydantic
import pytest

from core.settings import Settings


def test_an_unknown_field_is_refused_by_name_with_a_suggestion(tmp_path):
    with pytest.raises(pydantic.ValidationError) as err:
        Settings(data_dir=tmp_path, rate_limit_per_minut=10)
    assert "unknown setting 'rate_limit_per_minut' (did you mean 'rate_limit_per_minute'?)" in str(err.value)


def test_unknown_environment_variables_are_not_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_TEST_SOMETHING", "1")  # tests and CI use AVATAR_* switches of their own
    monkeypatch.setenv("AVATAR_HTTP_PORT", "8123")
    assert Settings(data_dir=tmp_path).http_port == 8123


@pytest.mark.parametrize("values, named", [
    (dict(heartbeat_interval_s=30, worker_dead_after_s=30), "heartbeat_interval_s"),
    (dict(sweep_interval_s=40, worker_dead_after_s=30), "sweep_interval_s"),
    (dict(webhook_retry_base_s=60, webhook_retry_cap_s=30), "webhook_retry_cap_s"),
    (dict(render_fps=30, video_max_fps=25), "video_max_fps"),
    (dict(worker_stop_timeout_s=50, worker_start_timeout_s=30, placement_timeout_s=10), "worker_stop_timeout_s"),
    (dict(room_connect_timeout_s=30, worker_start_timeout_s=30), "room_connect_timeout_s"),
])
def test_fields_that_must_fit_together_are_checked(tmp_path, values, named):
    with pytest.raises(pydantic.ValidationError) as err:
        Settings(data_dir=tmp_path, **values)
    assert named in str(err.value)


def test_errors_never_echo_the_values(tmp_path):
    with pytest.raises(pydantic.ValidationError) as err:
        Settings(data_dir=tmp_path, livekit_api_secret="s3cr3t-value", heartbeat_interval_s=99)
    assert "s3cr3t-value" not in str(err.value) and "s3cr3t-value" not in repr(err.value)
