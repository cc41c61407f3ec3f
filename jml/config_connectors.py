"""The `connectors:` section's models: one per connector type, told apart by `type`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from jml.config_values import Duration, _Strict


class GuardOverride(_Strict):
    max_deprovision_percent: float | None = Field(None, ge=0)
    max_deprovision_count: int | None = Field(None, ge=0)


class _ConnectorBase(_Strict):
    rate_limit: float | None = Field(None, gt=0)  # writes per second; None = connector default
    burst: int | None = Field(None, ge=1)
    concurrency: int = Field(4, ge=1, le=64)
    timeout: Duration = dt.timedelta(seconds=30)
    max_attempts: int = Field(6, ge=1)
    retry_budget: Duration = dt.timedelta(minutes=5)  # total time retries may take
    retry_backoff: Duration = dt.timedelta(seconds=0.5)  # first wait; doubles, with jitter...
    retry_backoff_max: Duration = dt.timedelta(seconds=30)  # ...up to this (a Retry-After wins)
    sla: Duration | None = None
    guard: GuardOverride | None = None
    username: str | None = None  # per-connector username template


class ScimConnectorConfig(_ConnectorBase):
    type: Literal["scim"]
    url: str
    token_env: str | None = None
    token_file: str | None = None
    enterprise_extension: bool | None = None  # None: use it when the server's schemas list it


class AwsConnectorConfig(_ConnectorBase):
    type: Literal["aws_identity_center"]
    scim_url: str
    token_env: str | None = None
    token_file: str | None = None
    instance_arn: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    assignment_concurrency: int = Field(10, ge=1, le=10)


class GithubConnectorConfig(_ConnectorBase):
    type: Literal["github"]
    mode: Literal["org", "emu"] = "org"
    org: str | None = None
    enterprise: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    api_url: str = "https://api.github.com"
    username_attribute: str = "github_username"
    provisions_per_hour: int | None = Field(None, ge=1)


class SlackConnectorConfig(_ConnectorBase):
    type: Literal["slack"]
    scim_url: str = "https://api.slack.com/scim/v2/"
    token_env: str | None = None
    token_file: str | None = None


ConnectorConfig = Annotated[
    ScimConnectorConfig | AwsConnectorConfig | GithubConnectorConfig | SlackConnectorConfig,
    Field(discriminator="type"),
]
