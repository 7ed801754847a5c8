"""Event rate limiting and operator settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from replytracker.events import EventRecorder
from replytracker.settings import DEFAULT_API_URL, Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_event_per_cause_per_period():
    clock = FakeClock()
    recorder = EventRecorder(kube=None, period_seconds=60, clock=clock)  # type: ignore[arg-type]

    assert recorder.should_post("uid", "Unauthorized") is True
    assert recorder.should_post("uid", "Unauthorized") is False
    assert recorder.should_post("uid", "ReplyDetected") is True
    assert recorder.should_post("other", "Unauthorized") is True
    clock.now += 61
    assert recorder.should_post("uid", "Unauthorized") is True


def test_forget_clears_a_tracker():
    recorder = EventRecorder(kube=None, period_seconds=60, clock=FakeClock())  # type: ignore[arg-type]
    recorder.should_post("uid", "Unauthorized")
    recorder.forget("uid")
    assert recorder.should_post("uid", "Unauthorized") is True


def test_settings_defaults(monkeypatch):
    for name in ("API_URL", "API_KEY", "API_SECRET", "WEBHOOK_URL", "WEBHOOK_SECRET", "MIN_FREQUENCY_SECONDS"):
        monkeypatch.delenv(f"REPLYTRACKER_{name}", raising=False)
    settings = Settings()
    assert settings.api_url == DEFAULT_API_URL
    assert settings.api_key is None
    assert settings.min_frequency_seconds == 60
    assert settings.metrics_port == 9090


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("REPLYTRACKER_API_URL", "http://127.0.0.1:8090/api/v1/")
    monkeypatch.setenv("REPLYTRACKER_API_SECRET", "hidden-value")
    monkeypatch.setenv("REPLYTRACKER_MIN_FREQUENCY_SECONDS", "5")
    settings = Settings()
    assert settings.api_url == "http://127.0.0.1:8090/api/v1"
    assert settings.min_frequency_seconds == 5
    assert "hidden-value" not in repr(settings)


def test_settings_reject_bad_values(monkeypatch):
    monkeypatch.setenv("REPLYTRACKER_MIN_FREQUENCY_SECONDS", "0")
    with pytest.raises(ValidationError, match="min_frequency_seconds"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("API_URL", "127.0.0.1:8090/api/v1"), ("WEBHOOK_URL", "ftp://host/hook")])
def test_settings_reject_non_http_urls(monkeypatch, name, value):
    monkeypatch.setenv(f"REPLYTRACKER_{name}", value)
    with pytest.raises(ValidationError, match=f"REPLYTRACKER_{name} must be an absolute http or https URL"):
        Settings()
