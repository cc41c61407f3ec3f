"""The `sources:` section's models: where HR exports and IdP events come from."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Literal

from pydantic import field_validator

from jml.config_values import Duration, _Strict


class SourceAuth(_Strict):
    type: Literal["basic", "bearer"]
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None


class HrisSource(_Strict):
    location: str
    format: Literal["csv", "json", "jsonl"] | None = None  # None: from the file name
    profile: str = "generic"
    columns: dict[str, str] | None = None
    status_values: dict[str, str] | None = None  # raw HR status -> Active|Leave|Terminated|Pre-hire
    poll_interval: Duration = dt.timedelta(minutes=5)
    timezone: str = "UTC"
    auth: SourceAuth | None = None
    endpoint_url: str | None = None
    full_export: bool = True  # a full export: people absent from it are counted as missing
    stale_after: Duration | None = None  # default: 3 poll intervals

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class OktaSource(_Strict):
    secret_env: str | None = None
    secret_file: str | None = None
    match: str = "work_email"


class WebhookSource(_Strict):
    secret_env: str | None = None
    secret_file: str | None = None
    tolerance: Duration = dt.timedelta(minutes=5)


class SourcesConfig(_Strict):
    hris: HrisSource | None = None
    okta: OktaSource | None = None
    webhook: WebhookSource | None = None
