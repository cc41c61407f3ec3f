"""Key-sharing dicts (jml.model.keyshared_dict) are plain dicts to every reader: the same items,
order, equality and JSON as the dicts they replace (account attributes, operation details)."""

from __future__ import annotations

import json

from jml.model import Action, ConnectorTraits, Person, Priority, Status, keyshared_dict
from jml.plan import _grant_op
from jml.policy import account_attributes


def _old_attributes(person: Person) -> dict[str, str]:
    attrs = {
        "given_name": person.preferred_name or person.first_name, "family_name": person.last_name,
        "display_name": person.display_name, "email": person.work_email, "title": person.job_title,
        "department": person.department, "cost_center": person.cost_center,
        "employee_number": person.employee_id, "manager_id": person.manager_id, "location": person.location,
        "country": person.country, "employment_type": person.employment_type,
        "github_username": person.github_username,
    }
    return {k: v for k, v in attrs.items() if v}


def test_account_attributes_are_the_same_dict() -> None:
    people = [
        Person("E1", Status.ACTIVE, first_name="Ada", last_name="L", work_email="a@x", department="Eng",
               country="DE", github_username="ada"),
        Person("E2", Status.ACTIVE, preferred_name="Bo", last_name="M", job_title="CTO", manager_id="E1"),
        Person("E3", Status.LEAVE),
    ]
    for p in people:
        got, want = account_attributes(p), _old_attributes(p)
        assert type(got) is dict and got == want and list(got.items()) == list(want.items())
        assert json.dumps(got) == json.dumps(want) and dict(got) == want
        assert {**got, "x": "1"} == {**want, "x": "1"}


def test_grant_details_are_the_same_dict() -> None:
    scim, aws = ConnectorTraits("app"), ConnectorTraits("aws", assignment_grants=True)
    op = _grant_op("app", "E1", "u", "group:Eng", True, scim, Priority.NORMAL, "by-department")
    assert op.action is Action.ADD_MEMBER and type(op.detail) is dict
    assert list(op.detail.items()) == [("username", "u"), ("rule", "by-department"), ("group", "group:Eng")]
    op = _grant_op("aws", "E1", "u", "Admin@123", False, aws, Priority.LEAVER)
    assert op.action is Action.UNASSIGN and json.dumps(op.detail) == '{"username": "u", "grant": "Admin@123"}'


def test_keyshared_dicts_are_independent() -> None:
    class Shape:
        pass

    a, b = keyshared_dict(Shape), keyshared_dict(Shape)
    a["k"] = "1"
    b["j"] = "2"
    b["k"] = "3"
    assert a == {"k": "1"} and list(b) == ["j", "k"] and b == {"j": "2", "k": "3"}
