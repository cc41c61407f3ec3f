"""`jml plan --json` is written chunk by chunk, byte for byte what one json.dumps of the whole
document gives (DESIGN's shape: exactly one object on stdout)."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jml.model import Action, Operation, Priority
from jml.sync import PlanOutcome, plan_json, write_plan_json


def _outcome(n: int, held: bool = False) -> PlanOutcome:
    ops = [Operation("app", Action.ADD_MEMBER if i % 3 else Action.CREATE, f"E{i:04d}",
                     {"username": f"zoë.{i}@example.com", "group": "All Staff", "when": dt.date(2026, 12, 6)},
                     Priority.NORMAL) for i in range(n)]
    return PlanOutcome("abc123" if n or held else None, ops, held, ["too many leavers: 6% > 5%"] if held else [],
                       why={"E0001": "joiner: new in the HR export"})


@pytest.mark.parametrize(("n", "chunk", "held"), [(0, 3, False), (1, 3, False), (7, 3, True), (9, 3, False),
                                                   (5000, 2000, False)])
def test_streamed_plan_json_is_the_one_document_byte_for_byte(n: int, chunk: int, held: bool) -> None:
    outcome = _outcome(n, held)
    out = io.StringIO()
    write_plan_json(outcome, out.write, chunk=chunk)
    assert out.getvalue() == json.dumps(plan_json(outcome), ensure_ascii=False, default=str)
    doc = json.loads(out.getvalue())
    assert len(doc["operations"]) == n and doc["guard"]["held"] is held


# The operations' text is joined from pieces (jml.plan_json); each case below must still be the
# one json.dumps document, byte for byte, whichever way a detail value is encoded.
class _Text(str):
    """A str subclass: json writes its characters, not its str()."""

    def __str__(self) -> str:
        return "not this"


class _Thing:
    def __str__(self) -> str:
        return 'a "thing"'


_ODD = ['', 'quote " and \\ backslash', "tab\tnew\nline\r\x00\x1f\x7f", "zoë — 日本語 🎉 \u2028\u2029",
        "</script>", "'single'"]


def _document(ops: list[Operation], why: dict[str, str], chunk: int) -> str:
    outcome = PlanOutcome("p1", ops, False, [], why=why)
    out = io.StringIO()
    write_plan_json(outcome, out.write, chunk=chunk)
    assert out.getvalue() == json.dumps(plan_json(outcome), ensure_ascii=False, default=str)
    return out.getvalue()


@pytest.mark.parametrize("detail", [
    {},
    {"group": _ODD[1], "rule": _ODD[2], "username": _ODD[3]},
    {_ODD[2]: _ODD[3], _ODD[0]: _ODD[4]},
    {"active": True, "suspended": False, "manager": None},
    {"attributes": {"given_name": "Zoë", "title": _ODD[1], "manager_id": None, "flag": True}},
    {"grants": ["a", 1, None, 2.5], "nested": {"a": [{"b": _ODD[2]}]}},
    {"count": 3, "ratio": 0.1, "big": 10**30, "nan": float("nan"), "inf": float("-inf"), "zero": -0.0},
    {"when": dt.date(2026, 12, 6), "at": dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC), "thing": _Thing()},
    {"group": _Text("group:Staff"), "rule": _Text("everyone")},
    {"attributes": {"name": _Text("x")}},
    {1: "int key", None: "null key", False: "bool key", 2.5: "float key"},
    {"group": "g", 7: "mixed keys"},
    {"reason": "the detail's own reason", "group": "g"},
    {"group": "", "grant": "", "rule": ""},
    {"attributes": {}},
], ids=lambda d: ",".join(map(repr, d))[:40] or "empty")
@pytest.mark.parametrize("action", [Action.ADD_MEMBER, Action.CREATE, Action.UPDATE, Action.CREATE_GROUP])
def test_each_kind_of_detail_value_is_what_json_writes(detail: dict[Any, Any], action: Action) -> None:
    ops = [Operation("app", action, "E1", detail), Operation("app", action, "E1", dict(detail)),
           Operation("ldap", action, "E2", detail)]
    _document(ops, {"E1": _ODD[1], "E2": _ODD[3]}, chunk=2)


@pytest.mark.parametrize(("connector", "person"), [
    (_ODD[1], _ODD[2]), (_ODD[3], ""), (_Text("app"), "E1"), ("app", _Text("E1"))])
def test_odd_connectors_and_people_are_what_json_writes(connector: str, person: str) -> None:
    ops = [Operation(connector, Action.ADD_MEMBER, person, {"group": "g", "rule": "r"}),
           Operation(connector, Action.CREATE, person, {"username": "u", "active": False})]
    _document(ops, {person: _ODD[2]}, chunk=1)


def test_a_detail_that_is_no_plain_dict_is_what_json_writes() -> None:
    from types import MappingProxyType

    ops = [Operation("app", Action.ADD_MEMBER, "E1", MappingProxyType({"group": "g", "reason": "own"})),
           Operation("app", Action.ADD_MEMBER, "E1", MappingProxyType({"group": _ODD[2]}))]
    _document(ops, {"E1": "joiner"}, chunk=5)


_texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
_plain = st.one_of(st.none(), st.booleans(), _texts)
_values: Any = st.one_of(
    _plain, st.integers(), st.floats(), st.builds(_Text, _texts), st.dates(),
    st.lists(_plain, max_size=3), st.dictionaries(_texts, _plain, max_size=3),
    st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), _plain, max_size=2))
_keys = st.one_of(st.sampled_from(["username", "group", "grant", "rule", "attributes", "active", "reason"]), _texts)
_operations = st.builds(
    Operation, connector=st.one_of(st.sampled_from(["app", "ldap"]), _texts), action=st.sampled_from(list(Action)),
    employee_id=st.one_of(st.sampled_from(["E1", "E2", ""]), _texts),
    detail=st.dictionaries(_keys, _values, max_size=5))


@given(st.lists(_operations, max_size=12),
       st.dictionaries(st.sampled_from(["E1", "E2", ""]), _texts, max_size=3), st.integers(1, 5))
def test_any_plan_is_the_one_document_byte_for_byte(ops: list[Operation], why: dict[str, str], chunk: int) -> None:
    doc = json.loads(_document(ops, why, chunk))
    assert len(doc["operations"]) == len(ops)
