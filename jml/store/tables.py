"""The schema (sqlmodel). Migrations in jml/store/migrations own how it gets there.

JSON columns hold small documents (attributes, op details); everything the engine
filters on is a real, indexed column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Index, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware timestamp, always written as UTC. SQLite keeps no offset: without this a
    Berlin or -05:00 time would be stored as its wall clock and read back as UTC (shifted),
    and comparisons (`next_change_at <= now`) would compare wall clocks of different zones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


def _ts(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), **kw))


class PersonRow(SQLModel, table=True):
    __tablename__ = "person"
    employee_id: str = Field(primary_key=True)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    row_hash: str | None = None
    status: str | None = None
    first_seen_terminated_at: dt.datetime | None = _ts()
    missing_count: int = 0
    override_kind: str | None = None
    override_at: dt.datetime | None = _ts()
    override_reason: str | None = None
    override_actor: str | None = None
    phase: str | None = None
    effective_termination: dt.datetime | None = _ts()
    next_change_at: dt.datetime | None = _ts(index=True)
    updated_at: dt.datetime | None = _ts()
    erased_at: dt.datetime | None = _ts()  # when retention erased their personal data (migration 0008)


class AccountRow(SQLModel, table=True):
    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("connector", "employee_id"),)
    id: int | None = Field(default=None, primary_key=True)
    connector: str = Field(index=True)
    employee_id: str = Field(index=True)
    remote_id: str | None = None
    username: str
    active: bool = True
    deleted: bool = False
    attributes: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: dt.datetime | None = _ts()
    updated_at: dt.datetime | None = _ts()


class GrantRow(SQLModel, table=True):
    """A grant jml pushed: which rule granted it and since when (for the access report)."""

    __tablename__ = "grant"
    connector: str = Field(primary_key=True)
    employee_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    rule: str | None = None
    since: dt.datetime | None = _ts()


class GroupRow(SQLModel, table=True):
    __tablename__ = "app_group"
    connector: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    remote_id: str | None = None


class PlanRow(SQLModel, table=True):
    __tablename__ = "plan"
    # The event-leaver bound counts the last hour's event and offboard plans every pass (0010).
    __table_args__ = (Index("ix_plan_origin_created", "origin", "created_at"),)
    id: str = Field(primary_key=True)
    created_at: dt.datetime | None = _ts()
    state: str = Field(index=True)  # held | queued | done | discarded | superseded
    origin: str = "export"  # export | event | offboard | approve | reconcile
    reasons: list[str] | None = Field(default=None, sa_column=Column(JSON))
    summary: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    policy_hash: str | None = None
    export_id: int | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = _ts()


class OperationRow(SQLModel, table=True):
    """The outbox. A plan's operations are written before anything is pushed."""

    __tablename__ = "operation"
    __table_args__ = (Index("ix_operation_claim", "state", "connector", "priority", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    plan_id: str = Field(index=True)
    connector: str
    employee_id: str = Field(index=True)
    action: str
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    priority: int = 10
    state: str = "pending"  # held | pending | running | done | dead | cancelled
    attempts: int = 0
    last_error: str | None = None
    created_at: dt.datetime | None = _ts()
    updated_at: dt.datetime | None = _ts()
    done_at: dt.datetime | None = _ts()


class AuditRow(SQLModel, table=True):
    """Append-only, hash-chained: hash = sha256(prev_hash + canonical record)."""

    __tablename__ = "audit"
    seq: int = Field(primary_key=True)
    at: dt.datetime | None = _ts()
    kind: str
    actor: str = "jml"
    subject: str | None = Field(default=None, index=True)
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    prev_hash: str
    hash: str


class AuditHeadRow(SQLModel, table=True):
    """Head hash and count kept apart, so a deleted tail of the chain is caught."""

    __tablename__ = "audit_head"
    id: int = Field(default=1, primary_key=True)
    count: int = 0
    head_hash: str = ""


class ExportRow(SQLModel, table=True):
    __tablename__ = "export"
    id: int | None = Field(default=None, primary_key=True)
    source: str
    name: str | None = None
    checksum: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    columns: list[str] | None = Field(default=None, sa_column=Column(JSON))
    row_count: int = 0
    quarantined: int = 0
    status: str = "accepted"  # accepted | rejected | held | unchanged
    reason: str | None = None
    read_at: dt.datetime | None = _ts()


class WebhookEventRow(SQLModel, table=True):
    """The webhook inbox: stored before the 200, processed after it; dedup by id."""

    __tablename__ = "webhook_event"
    id: str = Field(primary_key=True)  # "<source>:<event id>"
    source: str
    received_at: dt.datetime | None = _ts()
    occurred_at: dt.datetime | None = _ts()
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    processed_at: dt.datetime | None = _ts()
    outcome: str | None = None
    # An event that failed while processed is set aside alone, with its error (migration 0003).
    quarantined_at: dt.datetime | None = _ts()
    error: str | None = None


class SlaClockRow(SQLModel, table=True):
    """One leaver in one connector, from effective termination to verified deprovision."""

    __tablename__ = "sla_clock"
    __table_args__ = (UniqueConstraint("connector", "employee_id", "started_at"),)
    id: int | None = Field(default=None, primary_key=True)
    connector: str = Field(index=True)
    employee_id: str = Field(index=True)
    started_at: dt.datetime | None = _ts()
    deadline: dt.datetime | None = _ts()
    verified_at: dt.datetime | None = _ts()
    breached: bool = False
    predicted_breach: bool = False
    last_check: str | None = None
    # Why the deadline was missed: hr_data_late | held_plan | paused_connector | vendor_rate_limit |
    # app_errors | jml_backlog (jml/sla_causes.py; issue 17)
    breach_cause: str | None = None


class LeaseRow(SQLModel, table=True):
    """Who runs the workers: SQLite has no SKIP LOCKED, so one process at a time."""

    __tablename__ = "lease"
    name: str = Field(primary_key=True)
    holder: str
    expires_at: dt.datetime | None = _ts()


class SettingRow(SQLModel, table=True):
    """Small durable facts: server dialects learned, paused connectors, pre-approvals."""

    __tablename__ = "setting"
    key: str = Field(primary_key=True)
    value: Any = Field(default=None, sa_column=Column(JSON))


class ConnectorDialectRow(SQLModel, table=True):
    """What one connector's server turned out to support (PATCH forms, filters, paging,
    attributes it rejects or drops), learnt at run time and shared by every replica."""

    __tablename__ = "connector_dialect"
    connector: str = Field(primary_key=True)
    facts: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    updated_at: dt.datetime | None = _ts()


class ApiTokenRow(SQLModel, table=True):
    """A scoped API token (`jml token create`): only its sha256 is kept, never the token."""

    __tablename__ = "api_token"
    name: str = Field(primary_key=True)
    token_hash: str = Field(unique=True)
    roles: list[str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: dt.datetime | None = _ts()
    created_by: str | None = None
    expires_at: dt.datetime | None = _ts()
    revoked_at: dt.datetime | None = _ts()
    last_used_at: dt.datetime | None = _ts()


class ApprovalRequestRow(SQLModel, table=True):
    """Something that needs four eyes: a held plan or a layoff pre-approval, and who asked for it."""

    __tablename__ = "approval_request"
    id: str = Field(primary_key=True)  # the plan id, or "pa-…" for a pre-approval
    kind: str  # plan | pre_approval
    requested_by: str | None = None  # identity key of the requester (None: jml itself)
    requester: str | None = None  # the actor text, for people to read
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    state: str = "pending"  # pending | approved | discarded
    created_at: dt.datetime | None = _ts()
    decided_at: dt.datetime | None = _ts()


class ApprovalVoteRow(SQLModel, table=True):
    """One approver's yes to one request; one per identity."""

    __tablename__ = "approval_vote"
    request_id: str = Field(primary_key=True)
    approver_key: str = Field(primary_key=True)
    approver: str | None = None
    at: dt.datetime | None = _ts()


class AccessRequestRow(SQLModel, table=True):
    """A requested (or break-glass) grant beyond the rules: who asked, why, for how long, and where it stands.

    state: pending | approved | denied | active | expired | revoked | cancelled; kind: request | jit.
    """

    __tablename__ = "access_request"
    id: str = Field(primary_key=True)  # "ar-…" (request) or "jit-…"
    kind: str = "request"
    employee_id: str = Field(index=True)
    connector: str
    grant: str
    reason: str = ""
    duration_seconds: int = 0
    requested_by: str | None = None  # identity key (person:<sub> | token:<name> | cli:<user> | break-glass)
    requester: str | None = None  # the actor text, for people to read
    state: str = Field(default="pending", index=True)
    required: int = 1  # distinct approvals the policy asked for when the request opened
    decided_by: str | None = None
    end_reason: str | None = None
    created_at: dt.datetime | None = _ts()
    decided_at: dt.datetime | None = _ts()
    granted_at: dt.datetime | None = _ts()
    expires_at: dt.datetime | None = _ts(index=True)
    ended_at: dt.datetime | None = _ts()
    # The removal's own SLA clock (expired or revoked -> verified gone from the app), kept here
    # rather than in sla_clock: that one's read-back proves a leaver's account is off.
    removal_deadline: dt.datetime | None = _ts()
    removal_verified_at: dt.datetime | None = _ts()
    removal_breached: bool = False
    removal_check: str | None = None


class AccessVoteRow(SQLModel, table=True):
    """One approver's yes to one access request, and on what basis (manager | owner | approver)."""

    __tablename__ = "access_vote"
    request_id: str = Field(primary_key=True)
    approver_key: str = Field(primary_key=True)
    approver: str | None = None
    basis: str | None = None
    at: dt.datetime | None = _ts()


class AccessDenialRow(SQLModel, table=True):
    """A decision that a person must not hold an entitlement, whatever grants it (a rule, a request)."""

    __tablename__ = "access_denial"
    __table_args__ = (UniqueConstraint("employee_id", "connector", "grant"),)
    id: int | None = Field(default=None, primary_key=True)
    employee_id: str = Field(index=True)
    connector: str
    grant: str
    reason: str = ""
    decided_by: str | None = None
    source: str | None = None  # e.g. "review:<campaign id>", "cli"
    created_at: dt.datetime | None = _ts()


class ReviewCampaignRow(SQLModel, table=True):
    """An access review campaign (issue 18): by app (catalogue owners review) or by manager."""

    __tablename__ = "review_campaign"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    by: str  # app | manager
    connector: str | None = None  # only this connector's access (None: every connector)
    created_by: str | None = None
    created_at: dt.datetime | None = _ts()
    due_at: dt.datetime | None = _ts()
    closed_at: dt.datetime | None = _ts()


class ReviewItemRow(SQLModel, table=True):
    """One person's account, or one entitlement of it, put before a reviewer, with why they hold it."""

    __tablename__ = "review_item"
    __table_args__ = (Index("ix_review_item_campaign_reviewer", "campaign_id", "reviewer"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(index=True)
    employee_id: str = Field(index=True)  # "" for an account no HR person owns
    connector: str
    username: str = ""
    entitlement: str  # a grant (group:NAME, team:SLUG, PS@ACCT) or "(account)"
    reviewer: str  # the reviewer's e-mail (casefolded), or the default reviewer
    why: str  # rule | request | none
    why_detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    held_by: str = "jml"  # jml (recorded pushing) | app (found there by reconciliation)
    last_change: dt.datetime | None = _ts()


class ReviewDecisionRow(SQLModel, table=True):
    """The one decision on an item (keep | revoke), tied to its audit record by sequence number and hash."""

    __tablename__ = "review_decision"
    item_id: int = Field(primary_key=True)
    campaign_id: int = Field(index=True)
    decision: str  # keep | revoke
    decided_by: str  # who decided, as the audit trail names them
    reason: str = ""
    decided_at: dt.datetime | None = _ts()
    audit_seq: int | None = None
    audit_hash: str | None = None
    plan_id: str | None = None  # the revocation's plan
    verified_at: dt.datetime | None = _ts()  # the app read back without the entitlement
    verify_error: str | None = None


class FoundAccessRow(SQLModel, table=True):
    """What reconciliation found an app holding beyond what jml manages: memberships of groups
    no rule manages (kept, never removed without a review) and accounts no HR person owns."""

    __tablename__ = "found_access"
    connector: str = Field(primary_key=True)
    username: str = Field(primary_key=True)
    entitlement: str = Field(primary_key=True)  # a grant, or "(account)" for an orphan account
    employee_id: str = ""  # "" for an orphan
    remote_id: str | None = None  # the app's id of the account (an orphan's delete needs it)
    seen_at: dt.datetime | None = _ts()


class PlanPriorRow(SQLModel, table=True):
    """What a plan replaced, per person: their stored state and accounts just before it, so
    `jml revert` can put back previous attribute values and person/override state (issue 18)."""

    __tablename__ = "plan_prior"
    plan_id: str = Field(primary_key=True)
    employee_id: str = Field(primary_key=True)
    state: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # PersonState before
    row_hash: str | None = None
    accounts: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # connector -> record
    # A revert plan held for approval: the person state written back when it is approved.
    restore: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    restore_row_hash: str | None = None
