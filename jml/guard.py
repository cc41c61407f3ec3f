"""The mass-deprovisioning guard. Pure.

A plan is held (stored whole, nothing queued) when it deprovisions more than
`max_deprovision_percent` of the accounts jml manages in any connector, or more than
`max_deprovision_count` distinct people, or when the export shrank by more than
`max_shrink_percent` against the last good one. Limits are strict (`>`): exactly at the limit passes.
People on a pre-approved list (a known layoff) do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jml.model import Action, Operation

_DEPROVISION = frozenset({Action.DEACTIVATE, Action.DELETE})


@dataclass(frozen=True, slots=True)
class Limits:
    max_deprovision_percent: float = 5.0
    max_deprovision_count: int = 100
    max_shrink_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    held: bool
    reasons: tuple[str, ...] = ()
    deprovisions: Mapping[str, int] = field(default_factory=dict)  # connector -> people


def deprovisioned_people(ops: Iterable[Operation], exempt: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for op in ops:
        if op.action in _DEPROVISION and op.employee_id not in exempt:
            out.setdefault(op.connector, set()).add(op.employee_id)
    return out


def evaluate(
    ops: Iterable[Operation],
    *,
    managed: Mapping[str, int],
    limits: Limits,
    per_connector: Mapping[str, Limits] | None = None,
    export_rows: int | None = None,
    last_good_rows: int | None = None,
    pre_approved: frozenset[str] = frozenset(),
) -> Verdict:
    reasons: list[str] = []
    by_connector = deprovisioned_people(ops, pre_approved)
    for connector in sorted(by_connector):
        people = len(by_connector[connector])
        lim = (per_connector or {}).get(connector, limits)
        total = managed.get(connector, 0)
        if total > 0:
            pct = 100.0 * people / total
            if pct > lim.max_deprovision_percent:
                reasons.append(
                    f"{connector}: would deprovision {people} of {total} managed accounts "
                    f"({pct:.1f}% > max_deprovision_percent {lim.max_deprovision_percent:g}%)"
                )
        if people > lim.max_deprovision_count and lim is not limits:
            reasons.append(f"{connector}: would deprovision {people} people "
                           f"(> max_deprovision_count {lim.max_deprovision_count})")
    everyone = set().union(*by_connector.values()) if by_connector else set()
    if len(everyone) > limits.max_deprovision_count:
        reasons.append(f"would deprovision {len(everyone)} people (> max_deprovision_count "
                       f"{limits.max_deprovision_count})")
    if export_rows is not None and last_good_rows:
        shrink = 100.0 * (last_good_rows - export_rows) / last_good_rows
        if shrink > limits.max_shrink_percent:
            reasons.append(f"export shrank from {last_good_rows} to {export_rows} rows "
                           f"({shrink:.1f}% > max_shrink_percent {limits.max_shrink_percent:g}%)")
    return Verdict(bool(reasons), tuple(reasons), {c: len(p) for c, p in by_connector.items()})
