"""operation_reason keeps the words of an operation other than an update (issue 16: a plan
repeats a few hundred of them over 288k operations): what it says is what it said before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jml.explain import operation_reason
from jml.model import Action, Operation


def _reference(op: Operation, people: Mapping[str, str]) -> str:
    """operation_reason as it was before the words were kept."""
    who = people.get(op.employee_id, "")
    target = str(op.detail.get("group") or op.detail.get("grant") or "")
    rule = op.detail.get("rule")
    action = op.action
    if action in (Action.ADD_MEMBER, Action.ASSIGN):
        what = f"rule {rule!r} grants {target}" if rule else f"a rule grants {target}"
    elif action in (Action.REMOVE_MEMBER, Action.UNASSIGN):
        what = f"no rule grants {target} any more"
    elif action is Action.UPDATE:
        attrs = op.detail.get("attributes") or {}
        keys = sorted(attrs) if isinstance(attrs, Mapping) else []
        if op.detail.get("previous_employee_id"):
            what = f"conversion: takes over {op.detail['previous_employee_id']}'s account"
        else:
            what = "attributes changed: " + ", ".join(keys) if keys else "username changed"
    elif action is Action.CREATE_GROUP:
        return f"group {target} is needed by a rule and not yet seen in the app"
    elif action in (Action.CREATE, Action.INVITE):
        what = "no account yet"
    elif action is Action.DEACTIVATE:
        what = "account deactivated"
    elif action is Action.REACTIVATE:
        what = "account reactivated"
    elif action is Action.DELETE:
        what = "deleted after lifecycle.delete_after"
    else:
        what = action.value
    return f"{who} — {what}" if who else what


values: Any = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.text(max_size=8),
                        st.sampled_from(["group:All Staff", "everyone", "PS@123", ""]),
                        st.lists(st.integers(0, 3), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
operations = st.builds(
    Operation, connector=st.just("app"), action=st.sampled_from(list(Action)),
    employee_id=st.sampled_from(["E1", "E2"]),
    detail=st.dictionaries(st.sampled_from(["group", "grant", "rule", "attributes", "previous_employee_id"]), values,
                           max_size=4))


@given(st.lists(operations, min_size=1, max_size=20),
       st.dictionaries(st.sampled_from(["E1", "E2"]), st.text(max_size=8)))
def test_operation_reason_says_what_it_said(ops: list[Operation], people: dict[str, str]) -> None:
    for op in ops:  # twice each: the second is answered from what was kept
        assert operation_reason(op, people) == _reference(op, people)
        assert operation_reason(op, people) == _reference(op, people)
