"""Protected (break-glass) accounts: never deactivated, deleted or stripped of access by jml."""

from __future__ import annotations

from jml import plan
from jml.model import AccountRecord, Action, ConnectorTraits, DesiredAccount

TRAITS = {"app": ConnectorTraits(name="app")}
REC = AccountRecord("app", "E1", "root@acme.example", True, {"email": "root@acme.example"},
                    frozenset({"group:Admins", "group:All Staff"}), remote_id="r1")


def test_protected_leaver_keeps_account_and_grants_and_each_skip_is_recorded() -> None:
    leaving = DesiredAccount("app", "E1", "root@acme.example", False, REC.attributes, {}, leaver=True,
                             protected=True, create=False)
    p = plan.diff([leaving], {("app", "E1"): REC}, TRAITS)
    assert p.operations == []
    assert {s.reason for s in p.skipped} == {"protected account: not deactivated",
                                             "protected account: kept 2 grant(s)"}


def test_protected_account_no_rule_names_any_more_is_left_alone() -> None:
    p = plan.diff([], {("app", "E1"): REC}, TRAITS, scope=["E1"], protected=frozenset({"root@acme.example"}))
    assert [op.action for op in p.operations] == []
    p = plan.diff([], {("app", "E1"): REC}, TRAITS, scope=["E1"])
    assert {op.action for op in p.operations} == {Action.DEACTIVATE, Action.REMOVE_MEMBER}
