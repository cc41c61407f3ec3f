"""The values jml reasons about: people from HR, accounts in apps, operations on them.

Pure data: no I/O, no clock. Everything here is immutable so the planner can be
tested table-driven and property-based.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Canonical person attributes, the columns of shared/bench/gen_hris.py. Profiles map an
# HR system's column names onto these; anything else a source carries lands in `extra`.
CANONICAL_FIELDS: tuple[str, ...] = (
    "employee_id",
    "first_name",
    "last_name",
    "preferred_name",
    "work_email",
    "department",
    "cost_center",
    "job_title",
    "manager_id",
    "location",
    "country",
    "employment_type",
    "status",
    "hire_date",
    "termination_date",
    "github_username",
)


class Status(enum.StrEnum):
    """HR employment status, normalised from whatever the source calls it."""

    ACTIVE = "Active"
    LEAVE = "Leave"
    TERMINATED = "Terminated"
    PREHIRE = "Pre-hire"


@dataclass(frozen=True, slots=True)
class Person:
    """One row of an HR export after mapping and validation."""

    employee_id: str
    status: Status
    first_name: str = ""
    last_name: str = ""
    preferred_name: str = ""
    work_email: str = ""
    department: str = ""
    cost_center: str = ""
    job_title: str = ""
    manager_id: str = ""
    location: str = ""
    country: str = ""
    employment_type: str = ""
    hire_date: dt.date | None = None
    termination_date: dt.date | None = None
    github_username: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def get(self, attribute: str) -> str:
        """An attribute as text, for rules and templates ('' when absent)."""
        if attribute in _PERSON_FIELDS:
            value = getattr(self, attribute)
            if value is None:
                return ""
            if isinstance(value, dt.date):
                return value.isoformat()
            return str(value)
        return self.extra.get(attribute, "")

    @property
    def display_name(self) -> str:
        first = self.preferred_name or self.first_name
        return f"{first} {self.last_name}".strip() or self.employee_id


_PERSON_FIELDS = frozenset(
    f for f in Person.__dataclass_fields__ if f not in ("extra",)
)


class OverrideKind(enum.StrEnum):
    """A leaver decided outside the export; sticky until lifted (README "Offboard now",
    tests/integration/test_sticky_overrides.py)."""

    OFFBOARD = "offboard"
    IDP_DEACTIVATE = "idp_deactivate"
    HR_TERMINATION = "hr_termination"


@dataclass(frozen=True, slots=True)
class Override:
    kind: OverrideKind
    effective_at: dt.datetime
    reason: str = ""
    actor: str = ""


@dataclass(frozen=True, slots=True)
class PersonState:
    """What jml remembers about a person between exports (kept by the store)."""

    employee_id: str
    person: Person | None  # last accepted HR record; None if never seen in an export
    first_seen_terminated_at: dt.datetime | None = None
    missing_count: int = 0  # consecutive distinct full exports without this person
    override: Override | None = None


class Phase(enum.StrEnum):
    """Where a person is in the joiner-mover-leaver cycle at a given instant."""

    NOT_YET = "not_yet"  # hire date beyond the pre-hire window: nothing to provision
    PREHIRE = "prehire"  # account exists, inactive, no grants
    ACTIVE = "active"
    SUSPENDED = "suspended"  # leave of absence with `leave_of_absence: suspend`
    LEAVER = "leaver"
    GONE = "gone"  # leaver past delete_after: account deleted


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The outcome of lifecycle classification for one person at `now`."""

    phase: Phase
    effective_termination: dt.datetime | None = None  # for leavers: the SLA clock start
    reason: str = ""  # why: "status Terminated", "missing from 2 exports", "offboard: …"
    next_change_at: dt.datetime | None = None  # when the phase changes by time alone
    missing_reported: bool = False  # absent from the latest export, not (yet) a leaver


@dataclass(frozen=True, slots=True)
class ConnectorTraits:
    """What the planner needs to know about a target, as plain values."""

    name: str
    kind: str = "scim"  # scim | aws_identity_center | github | slack
    # Grants written NAME@ACCOUNT are account assignments (AWS permission sets).
    assignment_grants: bool = False
    # GitHub org mode: joining is an invitation, leaving cancels a pending one.
    create_action: str = "create"
    can_delete: bool = True
    # A pre-hire gets an inactive account; targets that cannot hold one wait for the hire date.
    supports_inactive_create: bool = True
    # A person without this HR attribute has no account here (GitHub: github_username).
    required_attribute: str | None = None
    username_template: str | None = None  # per-connector override of policy.username


@dataclass(frozen=True, slots=True)
class DesiredAccount:
    """What one person's account in one connector should look like."""

    connector: str
    employee_id: str
    username: str
    active: bool
    attributes: Mapping[str, str]
    grants: Mapping[str, str]  # grant name -> name of the rule that grants it
    delete: bool = False
    leaver: bool = False
    protected: bool = False
    create: bool = True  # False: only act on an account that already exists (leavers, not-yet hires)


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """What jml last pushed (and saw succeed) for one person in one connector."""

    connector: str
    employee_id: str
    username: str
    active: bool
    attributes: Mapping[str, str]
    grants: frozenset[str]
    remote_id: str | None = None
    deleted: bool = False


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"
    DELETE = "delete"
    ADD_MEMBER = "add_member"
    REMOVE_MEMBER = "remove_member"
    CREATE_GROUP = "create_group"
    ASSIGN = "assign"
    UNASSIGN = "unassign"
    INVITE = "invite"
    CANCEL_INVITE = "cancel_invite"


class Priority(enum.IntEnum):
    """Lower runs first. Leavers jump every queue."""

    LEAVER = 0
    NORMAL = 10


@dataclass(frozen=True, slots=True)
class Operation:
    """One idempotent step: 'make the remote match this', not 'send this call'.

    `detail` holds everything the connector needs (username, attributes, group, active),
    so an operation can be replayed after a crash without looking anything else up.
    """

    connector: str
    action: Action
    employee_id: str
    detail: Mapping[str, Any]
    priority: Priority = Priority.NORMAL

    def key(self) -> tuple[int, str, str, int, str]:
        # A conversion (an update taking over a predecessor's account) must precede the
        # person's other steps, which address the account under its new owner.
        step = -1 if "previous_employee_id" in self.detail else _ACTION_ORDER[self.action]
        return (
            int(self.priority),
            self.connector,
            self.employee_id,
            step,
            str(self.detail.get("group", self.detail.get("grant", ""))),
        )


# Within one person's chain: make the account exist before granting, cut access before
# removing memberships (the deactivate is what ends a leaver's sessions soonest).
_ACTION_ORDER: dict[Action, int] = {
    Action.CREATE_GROUP: 0,
    Action.DEACTIVATE: 1,
    Action.CANCEL_INVITE: 2,
    Action.CREATE: 3,
    Action.INVITE: 3,
    Action.REACTIVATE: 4,
    Action.UPDATE: 5,
    Action.UNASSIGN: 6,
    Action.REMOVE_MEMBER: 7,
    Action.ADD_MEMBER: 8,
    Action.ASSIGN: 9,
    Action.DELETE: 10,
}


@dataclass(frozen=True, slots=True)
class RemoteAccount:
    """An account as an app reports it (for verification and reconciliation)."""

    remote_id: str
    username: str
    active: bool
    external_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()  # grant names it holds (group:NAME, team:SLUG, PS@ACCT)
    pending_invitation: bool = False


def keyshared_dict(shape: type) -> dict[str, Any]:
    """An empty dict whose key table is shared with every other dict made from `shape`: CPython's
    key-sharing instance dicts (PEP 412). A plain `dict` to every reader (json, ==, copies, order
    of insertion), less than half the memory of one built alone when 100k of them hold the same
    few keys: 13 account attributes 464 -> 192 bytes, a 3-key operation detail 184 -> 105 (3.11).
    `shape` is an empty class of its own per kind of dict; fill each in one fixed key order."""
    return shape().__dict__  # type: ignore[no-any-return]


_PERSON_FIELD_ORDER = tuple(f for f in Person.__dataclass_fields__ if f != "extra")


def person_to_dict(p: Person) -> dict[str, Any]:
    """A Person as JSON-able values (dates as ISO strings). (Once per person of a first import:
    plain text, nearly every field, takes the first test.)"""
    out: dict[str, Any] = {}
    for name in _PERSON_FIELD_ORDER:
        value = getattr(p, name)
        if type(value) is str:
            if value:
                out[name] = value
            continue
        if isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, Status):
            value = value.value
        if value not in ("", None):
            out[name] = value
    if p.extra:
        out["extra"] = dict(p.extra)
    return out


def person_from_dict(d: Mapping[str, Any]) -> Person:
    kw: dict[str, Any] = {k: v for k, v in d.items() if k in _PERSON_FIELDS}
    kw["status"] = Status(kw.get("status", Status.ACTIVE.value))
    for k in ("hire_date", "termination_date"):
        if kw.get(k):
            kw[k] = dt.date.fromisoformat(kw[k])
    return Person(**kw, extra=dict(d.get("extra") or {}))
