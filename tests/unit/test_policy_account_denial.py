"""policy.desired with an account denied by an access review: no account in that connector at all,
whatever the rules say (the planner then deactivates the recorded one); a leaver is untouched."""

from __future__ import annotations

import datetime as dt

import pytest

from jml.model import ConnectorTraits, Lifecycle, Person, Phase, Status
from jml.policy import Policy, desired
from jml.review_items import ACCOUNT

POLICY = Policy.build("{work_email}", [("everyone", {"status": "Active"}, {"app": ["All"], "chat": ["All"]})], [])
TRAITS = [ConnectorTraits("app"), ConnectorTraits("chat")]
ANA = Person("E1", Status.ACTIVE, first_name="Ana", work_email="ana@x")


@pytest.mark.parametrize(("deny", "phase", "connectors"), [
    (None, Phase.ACTIVE, {"app", "chat"}),
    ({"app": frozenset({ACCOUNT})}, Phase.ACTIVE, {"chat"}),
    ({"app": frozenset({"group:" + ACCOUNT})}, Phase.ACTIVE, {"chat"}),  # as the denial loader spells it
    ({"app": frozenset({"group:All"})}, Phase.ACTIVE, {"app", "chat"}),  # a grant denied, the account stays
    ({"app": frozenset({ACCOUNT})}, Phase.LEAVER, {"app", "chat"}),  # a leaver is cut off everywhere anyway
])
def test_account_denial(deny: dict[str, frozenset[str]] | None, phase: Phase, connectors: set[str]) -> None:
    lc = Lifecycle(phase, effective_termination=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
                   if phase is Phase.LEAVER else None)
    got = desired(ANA, lc, TRAITS, POLICY, deny=deny)
    assert {d.connector for d in got} == connectors
