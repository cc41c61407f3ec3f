"""Configuration: YAML validated by pydantic. Unknown keys are errors.

Secrets are never in the YAML: every `*_env` key names an environment variable and its
`*_file` twin a file (re-read when it changes, for rotation). `load()` turns every
problem into one ConfigError naming the key path.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# Some sections' models live in their own modules: the `X as X` imports keep `from jml.config import X`.
from jml._config_errors import config_error
from jml.config_connectors import AwsConnectorConfig as AwsConnectorConfig
from jml.config_connectors import ConnectorConfig as ConnectorConfig
from jml.config_connectors import GithubConnectorConfig as GithubConnectorConfig
from jml.config_connectors import GuardOverride as GuardOverride
from jml.config_connectors import ScimConnectorConfig as ScimConnectorConfig
from jml.config_connectors import SlackConnectorConfig as SlackConnectorConfig
from jml.config_connectors import _ConnectorBase as _ConnectorBase
from jml.config_sources import HrisSource as HrisSource
from jml.config_sources import OktaSource as OktaSource
from jml.config_sources import SourceAuth as SourceAuth
from jml.config_sources import SourcesConfig as SourcesConfig
from jml.config_sources import WebhookSource as WebhookSource
from jml.config_values import Duration as Duration
from jml.config_values import _SecretFile as _SecretFile
from jml.config_values import _Strict as _Strict
from jml.config_values import parse_duration as parse_duration
from jml.config_values import resolve_secret as resolve_secret
from jml.errors import ConfigError


class StateConfig(_Strict):
    url: str = "sqlite:///jml.db"


ROLE_NAMES = ("viewer", "hr", "operator", "approver", "auditor", "admin")


def _role_list(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    for r in items:
        if r not in ROLE_NAMES:
            raise ValueError(f"unknown role {r!r} (use {', '.join(ROLE_NAMES)})")
    return [str(r) for r in items]


class OidcConfig(_Strict):
    """OpenID Connect sign-in (authorization code + PKCE). Discovery at <issuer>/.well-known/openid-configuration."""

    issuer: str
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile", "groups"])
    roles_claim: str = "groups"
    roles: dict[str, str | list[str]] = Field(default_factory=dict)  # group -> role or [roles]
    person_claim: str = "email"
    session_ttl: Duration = dt.timedelta(hours=8)
    clock_skew: Duration = dt.timedelta(seconds=60)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("issuer must be an https:// URL")
        return v.rstrip("/")

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for roles in v.values():
            _role_list(roles)
        return v

    def roles_for(self, groups: Any) -> frozenset[str]:
        """The roles the IdP groups map to (unknown groups map to nothing)."""
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, (list, tuple)):
            return frozenset()
        out: set[str] = set()
        for g in groups:
            if isinstance(g, str) and g in self.roles:
                out.update(_role_list(self.roles[g]))
        return frozenset(out)


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:8080"
    admin_token_env: str | None = None  # break-glass once OIDC is configured; every use is audited
    admin_token_file: str | None = None
    public_url: str | None = None  # how browsers reach jml; the OIDC redirect is <public_url>/auth/callback
    trusted_proxies: list[str] = Field(default_factory=list)  # X-Forwarded-For/-Proto honoured only from these
    oidc: OidcConfig | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_connections: int = Field(256, ge=1)  # open client connections; more are closed at once
    header_timeout: Duration = dt.timedelta(seconds=10)  # a request's headers (and an idle keep-alive) at most
    body_timeout: Duration = dt.timedelta(seconds=30)  # a request's body must arrive within this
    login_failures_per_minute: int = Field(10, ge=1)  # per client address and per account
    shutdown_grace: Duration = dt.timedelta(seconds=20)
    # /readyz fails while the oldest unprocessed webhook event has waited longer (a stalled inbox).
    inbox_stall_after: Duration = dt.timedelta(minutes=5)
    # The one time zone times are shown in (pages, `status`, reports); default: HR's (sources.hris.timezone).
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _display_tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("public_url must be an http(s):// URL")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _oidc_needs_public_url(self) -> ServerConfig:
        if self.oidc is not None and not self.public_url:
            raise ValueError("server.oidc needs server.public_url (the IdP redirects browsers to "
                             "<public_url>/auth/callback)")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"not an address or network: {net!r}") from None
        return v


class LifecycleConfig(_Strict):
    prehire_days: int = Field(3, ge=0)
    delete_after: Duration | None = dt.timedelta(days=30)
    leave_of_absence: Literal["keep", "suspend"] = "keep"
    missing_after: int = Field(2, ge=1)
    termination_time: str = "23:59"

    @field_validator("termination_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        try:
            dt.time.fromisoformat(v)
        except ValueError:
            raise ValueError(f"not a time of day: {v!r} (use HH:MM)") from None
        return v

    @property
    def termination_clock(self) -> dt.time:
        return dt.time.fromisoformat(self.termination_time)


class SlaConfig(_Strict):
    deprovision: Duration = dt.timedelta(minutes=10)


class GuardConfig(_Strict):
    max_deprovision_percent: float = Field(5, ge=0)
    max_deprovision_count: int = Field(100, ge=0)
    max_shrink_percent: float = Field(10, ge=0)
    max_event_leavers_per_hour: int = Field(1000, ge=0)
    approvals_required: int = Field(1, ge=1, le=10)  # people (other than the requester) to release a held plan


class SmtpConfig(_Strict):
    """Where notification e-mails are sent from (SMTP submission; STARTTLS by default)."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str  # the From: address

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if "@" not in v or any(c in v for c in "\r\n"):
            raise ValueError(f"not an e-mail address: {v!r}")
        return v


class NotificationsConfig(_Strict):
    """Telling approvers, requesters and reviewers (each channel optional; none: nothing is sent)."""

    # A Slack-compatible incoming webhook: the URL is the credential, hence _env/_file only.
    slack_webhook_url_env: str | None = None
    slack_webhook_url_file: str | None = None
    smtp: SmtpConfig | None = None
    # E-mail addresses told when the guard holds a plan (the webhook's channel is told regardless).
    approvers: list[str] = Field(default_factory=list)
    timeout: Duration = dt.timedelta(seconds=10)  # one attempt at one channel
    max_attempts: int = Field(3, ge=1, le=10)


class RetentionConfig(_Strict):
    """Erasure of leavers' personal data (off when absent)."""

    # A leaver terminated longer ago than this, with every account deprovisioned, is pseudonymised.
    leavers_after: Duration | None = None
    # Processed webhook events older than this lose their payload.
    events_after: Duration | None = None
    schedule: Duration = dt.timedelta(hours=24)  # how often `jml serve` purges

    @field_validator("leavers_after", "events_after")
    @classmethod
    def _positive(cls, v: dt.timedelta | None) -> dt.timedelta | None:
        if v is not None and v <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class ReconcileConfig(_Strict):
    schedule: Duration = dt.timedelta(hours=1)
    delete_orphans: bool = False


class Rule(_Strict):
    name: str
    when: dict[str, str | list[str]] = Field(default_factory=dict)
    grant: dict[str, list[str]] = Field(default_factory=dict)


class PolicyConfig(_Strict):
    username: str = "{work_email}"
    protected: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


class CatalogueEntryConfig(_Strict):
    """One entitlement's owner and risk (access requests' approval policy)."""

    owner: str | None = None  # the owner's work e-mail: may approve requests for it
    risk: Literal["low", "medium", "high"] = "medium"
    max_duration: Duration | None = None  # default: access.default_duration
    requestable: bool = True
    # Reconcile puts a managed entitlement back to what the rules say; an unmanaged one is never
    # removed without a review decision. None: managed when some rule grants it.
    managed: bool | None = None
    display_name: str | None = None


class JitConfig(_Strict):
    """Break-glass access: granted at once, without approval, to the listed roles only."""

    max_duration: Duration = dt.timedelta(hours=8)
    roles: list[str] = Field(default_factory=list)

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> list[str]:
        return _role_list(v)


class AccessConfig(_Strict):
    default_duration: Duration = dt.timedelta(days=30)  # every requested grant ends
    catalogue: dict[str, dict[str, CatalogueEntryConfig]] = Field(default_factory=dict)  # connector -> grant -> entry
    jit: JitConfig = JitConfig()
    # How often the daemon ends grants past their expiry and reads ended ones back from the apps.
    check_interval: Duration = dt.timedelta(seconds=60)

    @field_validator("default_duration", "check_interval")
    @classmethod
    def _positive(cls, v: dt.timedelta) -> dt.timedelta:
        if v <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class ReviewsConfig(_Strict):
    """Access review campaigns (issue 18)."""

    # Reviews what no catalogue owner (by app) or no manager (by manager) is there to review.
    default_reviewer: str = ""
    due: Duration = dt.timedelta(days=14)  # a campaign's default time to decide


class Config(_Strict):
    state: StateConfig = StateConfig()
    server: ServerConfig = ServerConfig()
    sources: SourcesConfig = SourcesConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    sla: SlaConfig = SlaConfig()
    guard: GuardConfig = GuardConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    policy: PolicyConfig = PolicyConfig()
    reviews: ReviewsConfig = ReviewsConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    retention: RetentionConfig = RetentionConfig()
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    access: AccessConfig = AccessConfig()

    # Where the file was read from: relative paths in it are relative to this folder.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @property
    def timezone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.sources.hris.timezone if self.sources.hris else "UTC")

    @property
    def display_timezone(self) -> zoneinfo.ZoneInfo:
        """The one zone people see times in: server.timezone, else HR's."""
        return zoneinfo.ZoneInfo(self.server.timezone) if self.server.timezone else self.timezone

    def connector_sla(self, name: str) -> dt.timedelta:
        c = self.connectors.get(name)
        return c.sla if c is not None and c.sla is not None else self.sla.deprovision


def from_dict(data: Any, base_dir: Path = Path(".")) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping")
    try:
        cfg = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as e:
        raise config_error(e, Config) from None
    _check_references(cfg)
    url = cfg.state.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        # A relative SQLite path means "next to the config file", not "wherever jml was started".
        db = Path(url.removeprefix("sqlite:///"))
        cfg = cfg.model_copy(update={"state": StateConfig(url=f"sqlite:///{(base_dir / db).resolve()}")})
    return cfg


def _check_references(cfg: Config) -> None:
    for i, rule in enumerate(cfg.policy.rules):
        for target in rule.grant:
            if target not in cfg.connectors:
                raise ConfigError(
                    f"rule {rule.name!r} grants access in unknown connector {target!r}",
                    f"policy.rules.{i}.grant.{target}",
                )
    for target in cfg.access.catalogue:
        if target not in cfg.connectors:
            raise ConfigError(f"the access catalogue names unknown connector {target!r}", f"access.catalogue.{target}")
    for name, c in cfg.connectors.items():
        if isinstance(c, GithubConnectorConfig):
            if c.mode == "org" and not c.org:
                raise ConfigError("mode org needs `org`", f"connectors.{name}.org")
            if c.mode == "emu" and not c.enterprise:
                raise ConfigError("mode emu needs `enterprise`", f"connectors.{name}.enterprise")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config file: `path`, else $JML_CONFIG, else ./jml.yaml."""
    chosen = Path(path or os.environ.get("JML_CONFIG") or "jml.yaml")
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {chosen} not found (use --config or $JML_CONFIG)") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {chosen}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{chosen}: not valid YAML{where}") from None
    return from_dict(data, chosen.resolve().parent)
