"""DESIGN "Sticky" in the pure core: who may set and who may lift a leaver override."""

from __future__ import annotations

import datetime as dt

import pytest

from jml.lifecycle import add_leaver, idp_lifts
from jml.model import Override, OverrideKind

T = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
IDP, OFF, HRT = OverrideKind.IDP_DEACTIVATE, OverrideKind.OFFBOARD, OverrideKind.HR_TERMINATION


@pytest.mark.parametrize(("kind", "lifted"), [(IDP, True), (OFF, False), (HRT, False)])
def test_idp_reactivation_lifts_only_its_own_deactivation(kind: OverrideKind, lifted: bool) -> None:
    assert idp_lifts(Override(kind, T), T + H) is lifted
    assert idp_lifts(Override(kind, T), T - H) is False  # a reactivation older than the leaver
    assert idp_lifts(None, T) is False


@pytest.mark.parametrize(
    ("current", "new", "kind", "at"),
    [
        (None, (IDP, 0), IDP, 0),
        ((IDP, 0), (OFF, 1), OFF, 0),     # HR takes an IdP deactivation over; the earlier time stands
        ((IDP, 1), (HRT, 0), HRT, 0),
        ((OFF, 24), (IDP, 0), OFF, 0),    # the IdP may deprovision sooner, HR keeps the leaver
        ((HRT, 0), (IDP, 1), HRT, 0),
        ((OFF, 0), (HRT, 1), OFF, 0),     # same authority: the earlier decision stands
        ((HRT, 2), (OFF, 0), OFF, 0),
        ((IDP, 0), (IDP, 3), IDP, 0),
    ],
)
def test_add_leaver(current: tuple[OverrideKind, int] | None, new: tuple[OverrideKind, int], kind: OverrideKind,
                    at: int) -> None:
    cur = Override(current[0], T + current[1] * H) if current else None
    out = add_leaver(cur, Override(new[0], T + new[1] * H))
    assert (out.kind, out.effective_at) == (kind, T + at * H)
