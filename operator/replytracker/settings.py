"""Operator-wide settings, read from REPLYTRACKER_* environment variables."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "https://api.we-link.ai/api/v1"


class Settings(BaseSettings):
    """Settings shared by every tracker; a tracker's spec overrides credentials and webhook."""

    model_config = SettingsConfigDict(env_prefix="REPLYTRACKER_", extra="ignore")

    api_url: str = Field(
        default=DEFAULT_API_URL,
        description="Base URL of the WeLink-compatible API, including /api/v1.",
    )
    api_key: SecretStr | None = Field(default=None, description="Default provider API key.")
    api_secret: SecretStr | None = Field(default=None, description="Default provider API secret.")
    webhook_url: str | None = Field(
        default=None, description="Webhook for trackers without spec.webhook."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signing key for the default webhook."
    )
    min_frequency_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Shortest interval between two checks of one tracker, in seconds; "
        "also the first retry delay after a failed check.",
    )
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Timeout of one HTTP request to the provider or a webhook."
    )
    response_wait_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Maximum time to poll get_response for an asynchronous response before the check fails.",
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, description="Delivery attempts before a webhook is given up as failed."
    )
    webhook_retry_base_seconds: float = Field(
        default=10.0, gt=0, description="Delay before the second delivery attempt; doubles after each."
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="Maximum delay between two delivery attempts."
    )
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    metrics_address: str = Field(
        default="0.0.0.0", description="Address the metrics endpoint listens on."
    )
    event_period_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Shortest time between two Kubernetes Events with the same reason on one tracker.",
    )
    max_concurrent_checks: int = Field(
        default=20, ge=1, description="Checks and deliveries running at the same time."
    )

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return _http_url(value, "REPLYTRACKER_API_URL").rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "REPLYTRACKER_WEBHOOK_URL")


def _http_url(value: str, name: str) -> str:
    """Return ``value`` if it is an absolute http or https URL with a host, else raise ValueError."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http or https URL, got {value!r}")
    return value
