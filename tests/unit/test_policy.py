"""Policy: given a person's HR attributes and lifecycle phase, expect these desired accounts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jml.model import ConnectorTraits, DesiredAccount, Lifecycle, Person, Phase, Status
from jml.policy import Policy, account_attributes, desired, grants_for, matches, normalize_grant, render_username

DEMO = ConnectorTraits("demo")
AWS = ConnectorTraits("aws", kind="aws_identity_center", assignment_grants=True)
GITHUB = ConnectorTraits("github", kind="github", create_action="invite", can_delete=False,
                         required_attribute="github_username", username_template="{github_username}")
SLACK = ConnectorTraits("slack", kind="slack", supports_inactive_create=False)
CONNECTORS = (DEMO, AWS, GITHUB, SLACK)

POLICY = Policy.build(
    "{work_email}",
    [
        ("everyone", {"status": ["Active", "Leave", "Pre-hire"]},
         {"demo": ["All Staff"], "slack": ["group:all-staff"]}),
        ("engineering", {"department": "Engineering"},
         {"demo": ["Engineering"], "github": ["team:engineering"], "aws": ["Developer@111111111111"]}),
        ("eng-berlin", {"department": "engineering", "location": ["berlin", "MUNICH"]},
         {"aws": ["Admin@222222222222", "Developer@111111111111"], "demo": ["group:Engineering", "Berlin"]}),
        ("contractors-no-grants", {"employment_type": "Contractor"}, {"demo": []}),
    ],
    ["BreakGlass@acme.example", "E900"],
)


def ana(**kw: Any) -> Person:
    base: dict[str, Any] = dict(first_name="Ana", last_name="Smith", work_email="ana@acme.example",
                                department="Engineering", location="Berlin", job_title="Engineer",
                                github_username="ana-gh", hire_date=dt.date(2020, 1, 6))
    base.update(kw)
    eid = base.pop("employee_id", "E1")
    status = base.pop("status", Status.ACTIVE)
    return Person(eid, status, **base)


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "person", "expected"),
    [
        pytest.param({"status": ["Active", "Leave"]}, ana(), True, id="list-any-of-first"),
        pytest.param({"status": ["Active", "Leave"]}, ana(status=Status.LEAVE), True, id="list-any-of-second"),
        pytest.param({"status": ["Active", "Leave"]}, ana(status=Status.TERMINATED), False, id="list-none-of"),
        pytest.param({"department": "engineering"}, ana(), True, id="case-insensitive-rule"),
        pytest.param({"department": "Engineering"}, ana(department="ENGINEERING"), True, id="case-insensitive-hr"),
        pytest.param({"status": "pre-hire"}, ana(status=Status.PREHIRE), True, id="status-value-casefolded"),
        pytest.param({"department": "Engineering", "location": "Berlin"}, ana(), True, id="all-keys-match"),
        pytest.param({"department": "Engineering", "location": "Paris"}, ana(), False, id="one-key-fails"),
        pytest.param({"department": "Engineering"}, ana(department=""), False, id="missing-attribute"),
        pytest.param({"department": ""}, ana(department=""), True, id="explicit-empty-value"),
        pytest.param({}, ana(), True, id="empty-when-matches-everyone"),
        pytest.param({"division": ["Platform"]}, ana(extra={"division": "platform"}), True, id="extra-attribute"),
        pytest.param({"hire_date": "2020-01-06"}, ana(), True, id="date-as-iso-text"),
    ],
)
def test_matches(when: dict[str, object], person: Person, expected: bool) -> None:
    rule = Policy.build("{work_email}", [("r", when, {})], []).rules[0]
    assert matches(rule, person) is expected


def test_grants_for_names_the_first_granting_rule() -> None:
    assert grants_for(ana(), POLICY) == {
        "demo": {"All Staff": "everyone", "Engineering": "engineering", "group:Engineering": "eng-berlin",
                 "Berlin": "eng-berlin"},
        "slack": {"group:all-staff": "everyone"},
        "github": {"team:engineering": "engineering"},
        "aws": {"Developer@111111111111": "engineering", "Admin@222222222222": "eng-berlin"},
    }


def test_grants_for_no_rule_matches() -> None:
    assert grants_for(ana(status=Status.TERMINATED, department="Sales"), POLICY) == {}


@pytest.mark.parametrize(
    ("grant", "traits", "expected"),
    [
        pytest.param("All Staff", DEMO, "group:All Staff", id="bare-name-is-group"),
        pytest.param("group:all-staff", DEMO, "group:all-staff", id="group-prefix-kept"),
        pytest.param("Developer@111111111111", AWS, "Developer@111111111111", id="aws-assignment-kept"),
        pytest.param("group:Admins", AWS, "group:Admins", id="aws-group"),
        pytest.param("Admins", AWS, "group:Admins", id="aws-bare-group"),
        pytest.param("Developer@111111111111", DEMO, "group:Developer@111111111111", id="at-sign-without-assignments"),
        pytest.param("team:engineering", GITHUB, "team:engineering", id="github-team-kept"),
        pytest.param("group:ops@acme.example", AWS, "group:ops@acme.example", id="group-with-at-sign"),
    ],
)
def test_normalize_grant(grant: str, traits: ConnectorTraits, expected: str) -> None:
    assert normalize_grant(grant, traits) == expected


@pytest.mark.parametrize(
    ("template", "person", "expected"),
    [
        pytest.param("{work_email}", ana(), "ana@acme.example", id="email"),
        pytest.param("{first_name}.{last_name}@acme.example", ana(), "Ana.Smith@acme.example", id="composed"),
        pytest.param("{work_email}", ana(work_email=""), "", id="missing-attribute-is-empty"),
        pytest.param("{nickname}", ana(), "", id="unknown-attribute-is-empty"),
        pytest.param("{nickname}", ana(extra={"nickname": "ans"}), "ans", id="extra-attribute"),
        pytest.param(" {github_username} ", ana(), "ana-gh", id="whitespace-stripped"),
        pytest.param("{employee_id}", ana(), "E1", id="employee-id"),
    ],
)
def test_render_username(template: str, person: Person, expected: str) -> None:
    assert render_username(template, person) == expected


def test_account_attributes_drop_empty_values() -> None:
    attrs = account_attributes(ana(preferred_name="Annie", department=""))
    assert attrs["given_name"] == "Annie"
    assert attrs["display_name"] == "Annie Smith"
    assert attrs["employee_number"] == "E1"
    assert "department" not in attrs
    assert all(attrs.values())


# --- desired accounts ---------------------------------------------------------------------------


def by_connector(accounts: list[DesiredAccount]) -> dict[str, DesiredAccount]:
    out = {a.connector: a for a in accounts}
    assert len(out) == len(accounts), "one desired account per connector"
    return out


def test_active_engineer_gets_every_connector_with_rule_names() -> None:
    got = by_connector(desired(ana(), Lifecycle(Phase.ACTIVE), CONNECTORS, POLICY))
    assert set(got) == {"demo", "aws", "github", "slack"}
    assert got["demo"].grants == {"group:All Staff": "everyone", "group:Engineering": "engineering",
                                  "group:Berlin": "eng-berlin"}
    assert got["aws"].grants == {"Developer@111111111111": "engineering", "Admin@222222222222": "eng-berlin"}
    assert got["github"].grants == {"team:engineering": "engineering"}
    assert got["github"].username == "ana-gh"
    assert got["slack"].grants == {"group:all-staff": "everyone"}
    for a in got.values():
        assert (a.active, a.create, a.leaver, a.delete, a.protected) == (True, True, False, False, False)
        assert a.attributes == account_attributes(ana())
    assert got["demo"].username == "ana@acme.example"


def test_first_rule_wins_a_grant_spelt_differently() -> None:
    """'Engineering' (rule engineering) and 'group:Engineering' (rule eng-berlin) are one grant:
    the first rule is the one the audit trail names."""
    got = by_connector(desired(ana(), Lifecycle(Phase.ACTIVE), [DEMO], POLICY))
    assert got["demo"].grants["group:Engineering"] == "engineering"


def test_mover_out_of_engineering_loses_engineering_connectors() -> None:
    got = by_connector(desired(ana(department="Sales"), Lifecycle(Phase.ACTIVE), CONNECTORS, POLICY))
    assert set(got) == {"demo", "slack"}
    assert got["demo"].grants == {"group:All Staff": "everyone"}


def test_rule_with_empty_grant_list_still_means_an_account() -> None:
    p = ana(status=Status.TERMINATED, department="Sales", employment_type="Contractor")
    got = by_connector(desired(p, Lifecycle(Phase.ACTIVE), CONNECTORS, POLICY))
    assert set(got) == {"demo"}
    assert got["demo"].grants == {}


@pytest.mark.parametrize(
    ("person", "connectors"),
    [
        pytest.param(ana(github_username=""), {"demo", "aws", "slack"}, id="no-github-username-no-github-account"),
        pytest.param(ana(work_email=""), {"github"}, id="no-email-no-email-named-accounts"),
    ],
)
def test_no_account_without_required_attribute_or_username(person: Person, connectors: set[str]) -> None:
    assert set(by_connector(desired(person, Lifecycle(Phase.ACTIVE), CONNECTORS, POLICY))) == connectors


@pytest.mark.parametrize(
    ("person", "protected_in"),
    [
        pytest.param(ana(work_email="breakglass@ACME.example"), {"demo", "aws", "slack"}, id="by-username-any-case"),
        pytest.param(ana(employee_id="e900"), {"demo", "aws", "slack", "github"}, id="by-employee-id"),
        pytest.param(ana(), set(), id="not-protected"),
    ],
)
def test_protected(person: Person, protected_in: set[str]) -> None:
    for phase in (Phase.ACTIVE, Phase.LEAVER, Phase.GONE):
        got = by_connector(desired(person, Lifecycle(phase), CONNECTORS, POLICY))
        assert {c for c, a in got.items() if a.protected} == protected_in


# (id, phase, expected per connector: (active, has grants, create, leaver, delete) or None for no account)
Flags = tuple[bool, bool, bool, bool, bool] | None
PHASE_CASES: list[tuple[str, Phase, dict[str, Flags]]] = [
    ("active", Phase.ACTIVE, {c.name: (True, True, True, False, False) for c in CONNECTORS}),
    ("suspended-keeps-grants", Phase.SUSPENDED, {c.name: (False, True, True, False, False) for c in CONNECTORS}),
    ("prehire-inactive-no-grants", Phase.PREHIRE,
     {"demo": (False, False, True, False, False), "aws": (False, False, True, False, False),
      "github": (False, False, True, False, False),
      # Slack cannot hold an inactive account: it waits for the hire date.
      "slack": (False, False, False, False, False)}),
    ("not-yet-only-follows-existing-accounts", Phase.NOT_YET,
     {c.name: (False, False, False, False, False) for c in CONNECTORS}),
    ("leaver", Phase.LEAVER, {c.name: (False, False, False, True, False) for c in CONNECTORS}),
    ("gone-deletes-where-possible", Phase.GONE,
     {"demo": (False, False, False, True, True), "aws": (False, False, False, True, True),
      "github": (False, False, False, True, False),  # can_delete False: stays deactivated
      "slack": (False, False, False, True, True)}),
]


@pytest.mark.parametrize(("phase", "expected"), [pytest.param(*c[1:], id=c[0]) for c in PHASE_CASES])
def test_phases(phase: Phase, expected: dict[str, Flags]) -> None:
    got = by_connector(desired(ana(), Lifecycle(phase), CONNECTORS, POLICY))
    assert {c: (a.active, bool(a.grants), a.create, a.leaver, a.delete) for c, a in got.items()} == expected
    for a in got.values():
        assert a.username == ("ana-gh" if a.connector == "github" else "ana@acme.example")


@pytest.mark.parametrize(
    ("phase", "connectors"),
    [
        pytest.param(Phase.ACTIVE, set(), id="active-no-rule-no-account"),
        pytest.param(Phase.SUSPENDED, set(), id="suspended-no-rule-no-account"),
        pytest.param(Phase.PREHIRE, set(), id="prehire-no-rule-no-account"),
        pytest.param(Phase.NOT_YET, {"demo", "aws", "github", "slack"}, id="not-yet-follows-everywhere"),
        pytest.param(Phase.LEAVER, {"demo", "aws", "github", "slack"}, id="leaver-followed-everywhere"),
        pytest.param(Phase.GONE, {"demo", "aws", "github", "slack"}, id="gone-followed-everywhere"),
    ],
)
def test_person_matching_no_rule(phase: Phase, connectors: set[str]) -> None:
    p = ana(status=Status.TERMINATED, department="Sales")
    got = by_connector(desired(p, Lifecycle(phase), CONNECTORS, POLICY))
    assert set(got) == connectors
    assert all(not a.grants and not a.create for a in got.values())


@pytest.mark.parametrize("phase", [Phase.LEAVER, Phase.GONE])
def test_leaver_is_followed_even_without_required_attribute_or_username(phase: Phase) -> None:
    """HR often blanks fields on termination; the account jml made must still be cut off at
    leaver priority (the planner addresses it by its recorded username)."""
    p = ana(status=Status.TERMINATED, github_username="", work_email="")
    got = by_connector(desired(p, Lifecycle(phase), CONNECTORS, POLICY))
    assert set(got) == {"demo", "aws", "github", "slack"}
    assert all(a.leaver and not a.create and not a.active for a in got.values())


def test_fingerprint_changes_with_policy() -> None:
    other = Policy.build("{work_email}", [("everyone", {}, {"demo": ["All Staff"]})], [])
    assert POLICY.fingerprint() == POLICY.fingerprint()
    assert POLICY.fingerprint() != other.fingerprint()
