"""Configuration: YAML validated by pydantic. Unknown keys are errors.

Secrets are never in the YAML: every `*_env` key names an environment variable and its
`*_file` twin a file (re-read when it changes, for rotation). `load()` turns every
problem into one ConfigError naming the key path.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from jml.errors import ConfigError
from jml.redact import register_secret

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> dt.timedelta:
    """'90s', '5m', '1h', '30d' or a number of seconds."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(seconds=float(value))
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 5m, 1h, 30d)")
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SecretFile:
    """A secret read from a file, re-read when its mtime changes (rotation)."""

    _cache: dict[Path, tuple[float, str]] = {}

    @classmethod
    def read(cls, path: Path, key: str) -> str:
        try:
            mtime = path.stat().st_mtime
            cached = cls._cache.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read secret file {path}: {e.strerror}", key) from None
        cls._cache[path] = (mtime, value)
        register_secret(value)
        return value


def resolve_secret(model: BaseModel, name: str, path: str, *, required: bool = True) -> str | None:
    """The value of secret `name` of `model` (from `name_env` or `name_file`).

    `path` is the model's key path, for the error message.
    """
    env_key = getattr(model, f"{name}_env", None)
    file_key = getattr(model, f"{name}_file", None)
    if file_key:
        return _SecretFile.read(Path(file_key), f"{path}.{name}_file")
    if env_key:
        value = os.environ.get(env_key)
        if not value:
            raise ConfigError(f"environment variable {env_key} is not set", f"{path}.{name}_env")
        register_secret(value)
        return value
    if required:
        raise ConfigError(f"missing secret: set {name}_env or {name}_file", path)
    return None


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


class GuardOverride(_Strict):
    max_deprovision_percent: float | None = Field(None, ge=0)
    max_deprovision_count: int | None = Field(None, ge=0)


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


def _key_path(loc: tuple[Any, ...]) -> str:
    # pydantic puts the discriminator tag in the location of union members: drop it.
    parts = [str(p) for p in loc if p not in ("scim", "aws_identity_center", "github", "slack")]
    return ".".join(parts)


def _friendly(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return "unknown connector type (use scim, aws_identity_center, github or slack)"
    if kind == "union_tag_not_found":
        return "missing `type` (scim, aws_identity_center, github or slack)"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


_TAGS = {"scim": ScimConnectorConfig, "aws_identity_center": AwsConnectorConfig,
         "github": GithubConnectorConfig, "slack": SlackConnectorConfig}


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at `loc` (a pydantic error location, without its last part) takes."""
    import types
    import typing

    current: Any = Config
    pending_dict = False
    for part in loc:
        if pending_dict:  # a mapping's key (a connector's name): its value type follows
            pending_dict = False
            continue
        if isinstance(part, int):
            continue
        if part in _TAGS:
            current = _TAGS[part]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        ann: Any = current.model_fields[part].annotation
        while True:
            origin = typing.get_origin(ann)
            if origin is typing.Annotated:
                ann = typing.get_args(ann)[0]
            elif origin in (typing.Union, types.UnionType):
                models = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
                others = [a for a in typing.get_args(ann) if a is not type(None)]
                ann = models[0] if len(models) == 1 else (others[0] if len(others) == 1 else Any)
                if len(models) > 1:
                    break  # a connector union: the tag in the location picks the model
            elif origin is dict:
                ann = typing.get_args(ann)[1]
                pending_dict = True
            elif origin is list:
                ann = typing.get_args(ann)[0]
            else:
                break
        current = ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [k for k in current.model_fields if k != "base_dir"]
    return []


def _unknown_key(loc: tuple[Any, ...]) -> str:
    import difflib

    path = _key_path(loc)
    near = difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1]), n=1, cutoff=0.6)
    if near:
        parent = _key_path(loc[:-1])
        return f"{path}: unknown key (did you mean {parent + '.' if parent else ''}{near[0]}?)"
    return f"{path}: unknown key"


def from_dict(data: Any, base_dir: Path = Path(".")) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping")
    try:
        cfg = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as e:
        errors = e.errors()
        unknown = [err for err in errors if err.get("type") == "extra_forbidden"]
        if unknown:
            # Every unknown key at once, each with its nearest known key: one round trip to fix a file.
            parts = [_unknown_key(tuple(err["loc"])) for err in unknown]
            if len(parts) == 1:
                path = _key_path(tuple(unknown[0]["loc"]))
                raise ConfigError(parts[0].removeprefix(f"{path}: "), path) from None
            raise ConfigError(f"{len(parts)} unknown keys: " + "; ".join(parts)) from None
        first = errors[0]
        raise ConfigError(_friendly(dict(first)), _key_path(first["loc"]) or "(top level)") from None
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
