"""Column presets: which source column holds each canonical person field.

A preset maps a canonical field (model.CANONICAL_FIELDS) to one or more candidate column
names; the first candidate present in the export's header wins, so one preset covers the
usual spellings of a vendor's report. `columns:` in the config overrides or extends a
preset (one column per field, then required to be present).

The presets live here as Python data so an installed package needs no data files;
config/profiles/*.yaml are the human-readable copies, and a unit test keeps both identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jml.errors import ConfigError
from jml.model import CANONICAL_FIELDS, Status

# Fields without which a row cannot be reasoned about: who, and whether they still work here.
REQUIRED_FIELDS: tuple[str, ...] = ("employee_id", "status")

GENERIC: dict[str, list[str]] = {f: [f] for f in CANONICAL_FIELDS}

# Workday RaaS: column XML aliases are chosen per tenant; these are the usual ones
# (config/profiles/workday.yaml). Employment_Status (Active/Terminated) is preferred over
# Active_Status (1/0) when a report carries both.
WORKDAY: dict[str, list[str]] = {
    "employee_id": ["Employee_ID", "Worker_ID"],
    "first_name": ["Legal_Name_First_Name", "First_Name"],
    "last_name": ["Legal_Name_Last_Name", "Last_Name"],
    "preferred_name": ["Preferred_Name", "Preferred_Name_First_Name"],
    "work_email": ["Email_Address", "Work_Email", "Primary_Work_Email"],
    "department": ["Supervisory_Organization", "Department"],
    "cost_center": ["Cost_Center"],
    "job_title": ["Business_Title", "Job_Title"],
    "manager_id": ["Manager_ID", "Manager_Employee_ID"],
    "location": ["Location", "Work_Location"],
    "country": ["Country", "Location_Country", "Work_Country"],
    "employment_type": ["Worker_Type"],
    "status": ["Employment_Status", "Active_Status", "Worker_Status"],
    "hire_date": ["Hire_Date"],
    "termination_date": ["Termination_Date"],
    "github_username": ["GitHub_Username", "Github_Username", "GitHub_ID"],
}

# BambooHR custom report field ids (config/profiles/bamboohr.yaml). `employeeNumber` is the
# company-assigned number (`id` is BambooHR's own). `division` and anything else unmapped
# land in Person.extra, so rules can still match on them. `employmentHistoryStatus` is an
# account-defined list (Full-Time, Contractor, ...): it is the employment type, not the status.
BAMBOOHR: dict[str, list[str]] = {
    "employee_id": ["employeeNumber"],
    "first_name": ["firstName"],
    "last_name": ["lastName"],
    "preferred_name": ["preferredName"],
    "work_email": ["workEmail"],
    "department": ["department"],
    "job_title": ["jobTitle"],
    "manager_id": ["supervisorEId"],
    "location": ["location"],
    "employment_type": ["employmentHistoryStatus"],
    "status": ["status"],
    "hire_date": ["hireDate"],
    "termination_date": ["terminationDate"],
    "github_username": ["customGitHubUsername", "githubUsername"],
}

# Raw status (compared case-insensitively, surrounding blanks ignored) -> Status.
DEFAULT_STATUS_VALUES: dict[str, Status] = {
    **dict.fromkeys(["active", "1", "true", "employed"], Status.ACTIVE),
    **dict.fromkeys(
        ["leave", "leave of absence", "on leave", "loa", "leave_of_absence"], Status.LEAVE
    ),
    **dict.fromkeys(
        ["terminated", "inactive", "0", "false", "separated"], Status.TERMINATED
    ),
    **dict.fromkeys(
        ["pre-hire", "prehire", "pre hire", "pending", "hired", "future hire"], Status.PREHIRE
    ),
}

# Per-profile additions to DEFAULT_STATUS_VALUES.
PROFILE_STATUS_VALUES: dict[str, dict[str, str]] = {
    "generic": {},
    "workday": {"1": "Active", "0": "Terminated", "on leave": "Leave"},  # Active_Status 1/0
    # BambooHR's `status` is Active/Inactive; Inactive is a leaver (the datasets API also
    # shows future hires as Inactive: map their employment status via `status_values`).
    "bamboohr": {"active": "Active", "inactive": "Terminated"},
}

PRESETS: dict[str, dict[str, list[str]]] = {
    "generic": GENERIC,
    "workday": WORKDAY,
    "bamboohr": BAMBOOHR,
}


@dataclass(frozen=True, slots=True)
class Profile:
    """A resolved column preset plus status vocabulary, ready to apply to a header."""

    name: str
    columns: Mapping[str, tuple[str, ...]]  # canonical field -> candidate columns, first wins
    status_values: Mapping[str, Status]  # lower-cased raw value -> Status
    explicit: frozenset[str] = field(default_factory=frozenset)  # fields set via `columns:`

    def fingerprint(self) -> bytes:
        """Stable bytes identifying this mapping, so row hashes change when it does."""
        parts = [self.name]
        parts += [f"{k}={'|'.join(v)}" for k, v in sorted(self.columns.items())]
        parts += [f"{k}>{v.value}" for k, v in sorted(self.status_values.items())]
        return "\x1e".join(parts).encode()


def status_from_text(value: str) -> Status:
    """'Active', 'leave', 'Pre-hire', 'terminated' ... -> Status; ValueError otherwise."""
    wanted = value.strip().casefold()
    for s in Status:
        if s.value.casefold() == wanted or s.name.casefold() == wanted:
            return s
    if wanted in ("prehire", "pre_hire"):
        return Status.PREHIRE
    raise ValueError(value)


def resolve_profile(
    name: str = "generic",
    columns: Mapping[str, str] | None = None,
    status_values: Mapping[str, str] | None = None,
) -> Profile:
    """The preset `name`, with `columns:` and `status_values:` from the config applied.

    Raises ConfigError naming the offending key (sources.hris.*).
    """
    preset = PRESETS.get(name)
    if preset is None:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown profile {name!r} (use one of: {known})", "sources.hris.profile")
    mapped: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in preset.items()}
    explicit: set[str] = set()
    for canonical, column in (columns or {}).items():
        if canonical not in CANONICAL_FIELDS:
            raise ConfigError(
                f"unknown field {canonical!r} (use one of: {', '.join(CANONICAL_FIELDS)})",
                f"sources.hris.columns.{canonical}",
            )
        if not isinstance(column, str) or not column.strip():
            raise ConfigError("expected a column name", f"sources.hris.columns.{canonical}")
        mapped[canonical] = (column.strip(),)
        explicit.add(canonical)
    vocab: dict[str, Status] = dict(DEFAULT_STATUS_VALUES)
    extra = {**PROFILE_STATUS_VALUES.get(name, {}), **(status_values or {})}
    for raw, target in extra.items():
        try:
            vocab[str(raw).strip().casefold()] = status_from_text(str(target))
        except ValueError:
            raise ConfigError(
                f"unknown status {target!r} (use Active, Leave, Terminated or Pre-hire)",
                f"sources.hris.status_values.{raw}",
            ) from None
    return Profile(name=name, columns=mapped, status_values=vocab, explicit=frozenset(explicit))
