"""One cycle: fetch the export, judge its health, update people, plan, guard, enqueue.

The shell around the pure core: it reads and writes the store and calls
lifecycle/policy/plan/guard with plain values. Only people who changed (row hash),
went missing, came back or reached a dated transition are planned, so a re-read of an
unchanged 100k-person export costs a parse and a dictionary comparison.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import gc
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jml import access_state, guard, lifecycle, metrics, notify, sla
from jml import plan as planner
from jml.errors import ExportRejected, SourceError
from jml.explain import changed_fields, operation_reason, person_reason
from jml.model import AccountRecord, Action, Lifecycle, Operation, Person, PersonState, Phase, Priority
from jml.plan_json import operation_json, write_operations
from jml.policy import desired
from jml.redact import Redacted, redact, redact_data, redacting_memo
from jml.revert_plan import Prior
from jml.runtime import Runtime
from jml.sources.fetch import Fetched, FetchMarker, fetch
from jml.sources.hris import ParsedExport, health_problems, parse_export
from jml.store.repo import IndexEntry, PersonSave
from jml.store.retry import retry_write
from jml.store.reverts import PlanPriors

log = logging.getLogger("jml.sync")


@dataclass
class PlanOutcome:
    plan_id: str | None
    operations: list[Operation] = field(default_factory=list)
    held: bool = False
    reasons: list[str] = field(default_factory=list)
    export_id: int | None = None
    unchanged: bool = False  # the source said nothing changed: nothing was planned
    quarantined: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # absent from the export, not (yet) leavers
    rows: int = 0
    skipped: list[str] = field(default_factory=list)
    # employee_id -> why they are in this plan, in words (jml.explain; `plan` shows it per operation)
    why: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        # By the enum member, each action named once (Action.value is a property: see Plan.summary).
        counts = Counter(op.action for op in self.operations)
        return dict(sorted((a.value, n) for a, n in counts.items()))


SOURCE = "hris"


async def read_export(rt: Runtime) -> tuple[Fetched | None, str]:
    """Fetch the export; (None, why) if it has not changed since the last read."""
    src = rt.config.sources.hris
    if src is None:
        raise SourceError("no HR source configured (sources.hris)")
    last = rt.store.last_export(SOURCE)
    # A rejected export is judged again on every read (it is still what the source offers:
    # exit 3 each time, never "unchanged, nothing to do"); an approved one is read again to
    # be recorded; one still `reading` was cut off by a crash before its plan committed.
    settled = last is not None and last.status not in ("approved", "rejected", "reading")
    marker = FetchMarker(last.checksum, last.etag, last.last_modified) if last and settled else None
    secret = rt.secret_getter(src.auth, "sources.hris.auth") if src.auth else None
    fetched = await fetch(src, base_dir=rt.config.base_dir, previous=marker, secret=secret)
    if fetched is None:
        return None, "source reports no change"
    if last is not None and settled and fetched.checksum == last.checksum:
        return None, "export unchanged (same checksum)"
    return fetched, ""


def mark_source_read(rt: Runtime, now: dt.datetime) -> None:
    """The source answered with a sound export (changed or not): it is not stale."""
    rt.store.set_setting(f"source_ok:{SOURCE}", now.isoformat())
    metrics.source_last_success.labels(SOURCE).set(now.timestamp())


def last_source_read(rt: Runtime) -> dt.datetime | None:
    value = rt.store.get_setting(f"source_ok:{SOURCE}")
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


SOURCE_ERROR_KEY = f"source_error:{SOURCE}"


def last_source_error(rt: Runtime) -> dict[str, Any] | None:
    """The last failed read of the HR source ({"at", "error"}), until a read succeeds again: what
    `jml status` shows as the source's last error (a rejected export has its own record)."""
    value = rt.store.get_setting(SOURCE_ERROR_KEY)
    return value if isinstance(value, dict) and value.get("error") else None


def _parse(rt: Runtime, fetched: Fetched, known: dict[str, str] | None) -> ParsedExport:
    src = rt.config.sources.hris
    assert src is not None
    return parse_export(fetched.data, name=fetched.name, format=src.format, profile=src.profile,
                        columns=src.columns, status_values=src.status_values, known_hashes=known)


async def plan_cycle(rt: Runtime, *, dry_run: bool = False, origin: str = "export") -> PlanOutcome:
    """Plan from the HR source (and every dated transition that has come due)."""
    # Planning 100k people allocates millions of small, long-lived objects; the cyclic
    # collector would rescan them over and over for nothing (they hold no cycles).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return await _plan_cycle(rt, dry_run=dry_run, origin=origin)
    finally:
        if enabled:
            gc.enable()


async def _plan_cycle(rt: Runtime, *, dry_run: bool, origin: str) -> PlanOutcome:
    now = rt.clock()
    src = rt.config.sources.hris
    try:
        fetched, why = await read_export(rt)
    except SourceError as e:
        metrics.source_errors.labels(SOURCE, "read").inc()
        if not dry_run:
            rt.audit.append("export_failed", {"source": SOURCE, "error": str(e)}, now=now)
            rt.store.set_setting(SOURCE_ERROR_KEY, {"at": now.isoformat(), "error": str(e)})
        raise
    # Back through the event loop once: the handle that resumed this task after the read holds
    # the read's future, and with it the export's bytes (14 MB at 100k people), for as long as
    # this task runs on without awaiting — the whole plan.
    await asyncio.sleep(0)
    if not dry_run and last_source_error(rt) is not None:  # the source answers again
        rt.store.set_setting(SOURCE_ERROR_KEY, None)
    # Whatever the export says, the people with a change due at a set time or missing from
    # earlier exports are looked at: only theirs are read as index entries up front (a poll of
    # 500k unchanged people read and built 500k of them, the larger half of its time).
    flagged = rt.store.flagged_index()
    if fetched is None:
        if not dry_run:
            mark_source_read(rt, now)
        log.info("export unchanged: planning only dated transitions", extra={"reason": why})
        outcome = _plan_scope(rt, _due(flagged, now), {}, flagged, now, None, dry_run=dry_run, origin=origin)
        outcome.unchanged = True
        return outcome
    known = rt.store.row_hashes()
    last_good = rt.store.last_export(SOURCE, good=True)
    # An export an operator approved (`jml approve` of the plan it held) is vouched for:
    # reading it again must not hold it for its size once more, or approval never takes.
    last = rt.store.last_export(SOURCE)
    vouched = last is not None and last.status == "approved" and last.checksum == fetched.checksum
    try:
        parsed = _parse(rt, fetched, known or None)
        problems = health_problems(parsed, last_columns=last_good.columns if last_good else None)
        if problems:
            raise ExportRejected("; ".join(problems), file=fetched.name)
    except ExportRejected as e:
        metrics.source_errors.labels(SOURCE, "rejected").inc()
        if not dry_run:
            rt.store.add_export(source=SOURCE, name=fetched.name, checksum=fetched.checksum, etag=fetched.etag,
                                last_modified=fetched.last_modified, columns=(), row_count=0, quarantined=0,
                                status="rejected", reason=str(e), now=now)
            rt.audit.append("export_rejected", {"source": SOURCE, "file": fetched.name, "reason": str(e)}, now=now)
        raise
    # Parsed and judged: from here on only what describes the export is used, not its bytes.
    fetched = dataclasses.replace(fetched, data=b"")
    for q in parsed.quarantined:
        log.warning("row quarantined", extra={"file": q.file, "row": q.row, "field": q.field, "error": q.message})
    present = parsed.row_hashes.keys() | parsed.quarantined_ids
    full = src is not None and src.full_export
    changed = {p.employee_id: p for p in parsed.people}
    scope: dict[str, tuple[bool, bool]] = {}  # eid -> (in export, count as missing)
    for eid in changed:
        scope[eid] = (True, False)
    for eid, entry in flagged.items():
        if entry.missing_count and eid in present and eid not in changed and eid not in parsed.quarantined_ids:
            scope[eid] = (True, False)  # back in the export: no longer missing
    # Everyone read from an export before and absent from this full one (set operations: the
    # changed and set-aside rows are in the export too).
    missing = sorted(known.keys() - present) if full else []
    for eid in missing:
        scope[eid] = (False, True)
    for eid in _due(flagged, now):
        scope.setdefault(eid, (eid in present, False))
    del present, known  # (100k-entry sets and maps, not needed while planning)
    # The stored facts of everyone planned: read for them alone unless they are many.
    index = rt.store.person_index() if len(scope) > 20_000 else {**flagged, **rt.store.index_of(
        [eid for eid in scope if eid not in flagged])}
    export_id = None
    if not dry_run:
        export_id = rt.store.add_export(
            source=SOURCE, name=fetched.name, checksum=fetched.checksum, etag=fetched.etag,
            last_modified=fetched.last_modified, columns=parsed.columns, row_count=parsed.row_count,
            quarantined=len(parsed.quarantined), status="reading", reason=None, now=now)
    outcome = _plan_scope(rt, scope, changed, index, now, export_id, dry_run=dry_run, origin=origin,
                          parsed=parsed, last_good_rows=last_good.row_count if last_good and not vouched else None)
    outcome.quarantined = [f"{q.file}, row {q.row}, field {q.field}: {q.message}" for q in parsed.quarantined]
    outcome.missing = sorted(missing)
    outcome.rows = parsed.row_count
    if not dry_run and export_id is not None:
        rt.store.set_export_status(export_id, "held" if outcome.held else "accepted",
                                   "; ".join(outcome.reasons) or None)
        mark_source_read(rt, now)  # read fine (a held plan is the guard's business, not a stale source)
        if not outcome.held:
            metrics.source_records.labels(SOURCE).set(parsed.row_count)
        rt.audit.append("export", {"source": SOURCE, "file": fetched.name, "checksum": fetched.checksum,
                                   "rows": parsed.row_count, "changed": len(changed), "missing": len(missing),
                                   "quarantined": outcome.quarantined[:1000], "held": outcome.held}, now=now)
        save_set_aside(rt, parsed, now)
    return outcome


SET_ASIDE_KEY = f"set_aside:{SOURCE}"
SET_ASIDE_LIMIT = 1000


def save_set_aside(rt: Runtime, parsed: ParsedExport, now: dt.datetime) -> None:
    """The rows of the latest read export that were set aside (quarantined), with who they
    are about: the page, `jml status` and the person search show them (issue 17)."""
    rows = [{"file": q.file, "row": q.row, "field": q.field, "message": q.message, "employee_id": q.employee_id,
             "name": q.name, "email": q.email, "seen_at": now.isoformat()}
            for q in parsed.quarantined[:SET_ASIDE_LIMIT]]
    rt.store.set_setting(SET_ASIDE_KEY, {"file": parsed.file, "count": len(parsed.quarantined), "rows": rows})


def set_aside_rows(rt: Runtime) -> dict[str, Any]:
    """{"file", "count", "rows": [...]} of the latest read export (empty when none)."""
    doc = rt.store.get_setting(SET_ASIDE_KEY)
    return doc if isinstance(doc, dict) else {"file": None, "count": 0, "rows": []}


class _KnownGroups(Mapping[str, frozenset[str]]):
    """The groups jml has seen exist (store.known_groups()), read when the planner first asks:
    it asks only for a plan with new memberships, and an event pass of leavers has none."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._groups: dict[str, frozenset[str]] | None = None

    def _read(self) -> dict[str, frozenset[str]]:
        if self._groups is None:
            self._groups = self._rt.store.known_groups()
        return self._groups

    def __getitem__(self, connector: str) -> frozenset[str]:
        return self._read()[connector]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _due(index: dict[str, IndexEntry], now: dt.datetime) -> dict[str, tuple[bool, bool]]:
    return {eid: (True, False) for eid, e in index.items() if e.next_change_at is not None and e.next_change_at <= now}


def _plan_scope(
    rt: Runtime,
    scope: dict[str, tuple[bool, bool]],
    changed: Mapping[str, Person],
    index: dict[str, IndexEntry],
    now: dt.datetime,
    export_id: int | None,
    *,
    dry_run: bool,
    origin: str,
    parsed: ParsedExport | None = None,
    last_good_rows: int | None = None,
    verdict_for: Callable[[list[Operation]], guard.Verdict] | None = None,
) -> PlanOutcome:
    previous = rt.store.load_states(scope.keys()) if scope else {}
    saves: list[PersonSave] = []
    wishes = []
    # Who changed, by reference (their audit record is made as it is written, never in a dry run).
    transitions: list[_Transition] = []
    why: dict[str, str] = {}
    # The same words for many people (every joiner hired the same day): kept once, not per person.
    texts: dict[str, str] = {}
    connectors = list(rt.traits.values())
    people: list[tuple[str, Person, Lifecycle]] = []  # whose desired accounts to work out, below
    for eid, (present, count_missing) in scope.items():
        prev = previous.get(eid)
        person = changed.get(eid)
        if person is None and present and prev is not None:
            person = prev.person
        state = lifecycle.observe(prev, person if present else None, now,
                                  counted_missing=count_missing, employee_id=eid)
        lc = lifecycle.classify(state, now, rt.rules)
        row_hash = parsed.row_hashes.get(eid) if parsed is not None and present else (
            index[eid].row_hash if eid in index else None)
        if not dry_run:  # (what is saved and audited: nothing in a dry run)
            saves.append(PersonSave(state, row_hash, lc))
        old_phase = index[eid].phase if eid in index else None
        if old_phase != lc.phase.value or eid in changed:
            # A row whose hash changed but whose values did not (re-quoted, or the first poll after
            # a new hash version: every row) is planned again but is no HR change to record.
            if not dry_run and (old_phase != lc.phase.value or prev is None or prev.person != state.person):
                transitions.append((eid, prev, state, lc, old_phase))
            text = person_reason(prev, state, lc, old_phase)
            why[eid] = texts.setdefault(text, text)
        if state.person is not None:
            people.append((eid, state.person, lc))
    # Approved requests in force and denials, once, for those who keep access: desired() keeps
    # the one and drops the other; a leaver's accounts are cut whatever was requested or denied
    # (an event pass of leavers asks nothing).
    keeping = [eid for eid, _, lc in people if lc.phase not in (Phase.LEAVER, Phase.GONE)]
    beyond = access_state.extras(rt, keeping, now) if keeping else {}
    for eid, person, lc in people:
        more = beyond.get(eid)
        wishes.extend(desired(person, lc, connectors, rt.policy,
                              extra=more.extra if more else None, deny=more.deny if more else None))
    del people
    records = rt.store.load_accounts(scope.keys()) if scope else {}
    result = planner.diff(wishes, records, rt.traits, scope=scope.keys(), known_groups=_KnownGroups(rt),
                          protected=rt.policy.protected)
    # What the plan replaces, for `jml revert`: its people as stored before it (joiners: nothing).
    priors = [] if dry_run else _priors(result.operations, previous, index, records)
    del wishes, records, texts  # the largest intermediate values: free them before the writes
    verdict = verdict_for(result.operations) if verdict_for is not None else guard.evaluate(
        result.operations, managed=rt.store.managed_counts(), limits=rt.limits, per_connector=rt.connector_limits(),
        export_rows=parsed.row_count if parsed is not None else None, last_good_rows=last_good_rows,
        pre_approved=frozenset(rt.store.get_setting("pre_approved_leavers", []) or []))
    # A held plan is stored even with no operations (a truncated export changes nobody yet):
    # it must be listed by `jml status` and approved or discarded like any other.
    plan_id = uuid.uuid4().hex[:12] if result.operations or verdict.held else None
    outcome = PlanOutcome(plan_id, result.operations, verdict.held, list(verdict.reasons), export_id,
                          skipped=[f"{s.connector}/{s.employee_id}: {s.reason}" for s in result.skipped], why=why)
    metrics.plan_operations.observe(len(result.operations))
    if dry_run:
        return outcome
    # The people's new state, the plan with its operations and their audit records commit
    # together: a crash between "people saved" and "plan saved" would otherwise leave rows
    # that look unchanged on the next read and a plan that never was.
    audit_records = _audit_records(rt, outcome, transitions, result.skipped)

    def save(people: list[PersonSave]) -> None:
        with rt.audit.lock, rt.store.transaction() as tx:
            if not verdict.held:
                # A held plan changes nothing, the people's recorded state included: the next
                # export is planned against the same state, so no change is lost while it waits.
                rt.store.save_people(people, now, tx)
            if plan_id is not None:
                rt.outbox.save_plan(plan_id, result.operations, held=verdict.held, origin=origin,
                                    reasons=list(verdict.reasons), summary=result.summary(),
                                    policy_hash=rt.policy.fingerprint(), export_id=export_id, now=now, conn=tx)
                PlanPriors(rt.store).save_in(tx, plan_id, priors)
            rt.audit.append_in(tx, audit_records(), now=now)

    retry_write(functools.partial(save, saves), "saving the plan")
    if plan_id is not None:
        if verdict.held:
            notify.held_plan_saved(rt, plan_id, list(verdict.reasons), len(result.operations))
        # Leavers' SLA clocks start now (held or not), at their effective termination.
        # (Only when there are leavers: a 100k-joiner import need not pay for the clock queries.)
        if any(op.priority == Priority.LEAVER for op in result.operations):
            sla.start_for_plan(rt, plan_id, now, operations=result.operations, effective={
                s.state.employee_id: s.lifecycle.effective_termination for s in saves
                if s.lifecycle is not None and s.lifecycle.effective_termination is not None})
    del saves
    return outcome


def _priors(ops: Iterable[Operation], previous: Mapping[str, PersonState], index: Mapping[str, IndexEntry],
            records: Mapping[tuple[str, str], AccountRecord]) -> list[Prior]:
    """Each changed person's stored state, row hash and accounts before the plan (jml.revert_plan.Prior)."""
    eids = {op.employee_id for op in ops if op.employee_id}
    if not eids:
        return []
    accounts: dict[str, dict[str, AccountRecord]] = {}
    for (connector, eid), rec in records.items():
        if eid in eids:
            accounts.setdefault(eid, {})[connector] = rec
    out = []
    for eid in sorted(eids):
        prev, mine = previous.get(eid), accounts.get(eid, {})
        if prev is not None or mine:
            entry = index.get(eid)
            out.append(Prior(eid, prev, entry.row_hash if entry is not None else None, mine))
    return out


def plan_people(
    rt: Runtime,
    scope: dict[str, tuple[bool, bool]],
    changed: Mapping[str, Person],
    index: dict[str, IndexEntry],
    now: dt.datetime,
    *,
    origin: str,
    verdict_for: Callable[[list[Operation]], guard.Verdict] | None = None,
    dry_run: bool = False,
) -> PlanOutcome:
    """A person-scoped plan (webhook, offboard): the same pipeline as an export's, for
    `scope` only; `index` needs entries for the scoped people only. `verdict_for` replaces
    the export guard (event plans have their own bound: jml/event_plan.py)."""
    return _plan_scope(rt, scope, changed, index, now, None, dry_run=dry_run, origin=origin,
                       verdict_for=verdict_for)


# The keys of an hr_change record (_describe's and "reason").
HR_CHANGE_KEYS = ("kind", "phase", "previous_phase", "effective_termination", "changes", "reason")


def _describe(prev: PersonState | None, state: PersonState, lc: Lifecycle, old_phase: str | None) -> dict[str, object]:
    kind = "change"
    if prev is None or prev.person is None:
        kind = "joiner" if lc.phase is not Phase.NOT_YET else "future_joiner"
    elif lc.phase in (Phase.LEAVER, Phase.GONE) and old_phase not in ("leaver", "gone"):
        kind = "leaver"
    elif old_phase in ("leaver", "gone") and lc.phase not in (Phase.LEAVER, Phase.GONE):
        kind = "rehire"
    elif state.missing_count and (prev.missing_count != state.missing_count):
        kind = "missing"
    doc: dict[str, object] = {"kind": kind, "phase": lc.phase.value, "previous_phase": old_phase,
                              "effective_termination": lc.effective_termination.isoformat()
                              if lc.effective_termination else None}
    if prev is not None and prev.person is not None and state.person is not None:
        changes = changed_fields(prev.person, state.person)
        if changes:  # a mover's history shows what changed (issue 17)
            doc["changes"] = {k: list(v) for k, v in changes.items()}
    return doc


_Transition = tuple[str, PersonState | None, PersonState, Lifecycle, str | None]  # eid, prev, state, lc, old phase


def _audit_records(rt: Runtime, outcome: PlanOutcome, transitions: Iterable[_Transition],
                   skipped: Iterable[planner.Skip] = ()) -> Callable[[], Iterator[tuple[str, object, str, str | None]]]:
    """Every HR change seen, every skip, then the plan: its reasons, the policy hash, and each
    operation with the rule that granted it (in chunks, generated as they are written)."""
    skips = list(skipped)

    def records() -> Iterator[tuple[str, object, str, str | None]]:
        clean = redacting_memo()  # kinds, phases, reasons; connector, action, group and rule names: a few, repeated
        for eid, prev, state, lc, old_phase in transitions:
            # _describe's keys are fixed words, none a secret field name (the test of OPERATION_KEYS
            # checks them too): redacting each value is what redact_data would do to the record.
            data = _describe(prev, state, lc, old_phase)
            data["reason"] = lc.reason or None
            yield "hr_change", Redacted({k: clean(v) for k, v in data.items()}), "hr", eid
        # A protected account (policy.protected) is never deactivated or deleted; every skip is audited.
        for sk in skips:
            yield "skip", {"connector": sk.connector, "reason": sk.reason, "plan_id": outcome.plan_id,
                           "held": outcome.held}, "jml", sk.employee_id
        if outcome.plan_id is None:
            return
        ops = outcome.operations
        yield "plan", {"plan_id": outcome.plan_id, "held": outcome.held, "reasons": outcome.reasons,
                       "summary": outcome.summary(), "policy_hash": rt.policy.fingerprint(),
                       "operations": len(ops)}, "jml", None
        plan_id = _clean(outcome.plan_id)
        actions = _ACTION_VALUES
        for i in range(0, len(ops), 5000):
            # Built redacted, as redact_data would leave it (OPERATION_KEYS are no secret field
            # names; every value through redact): the audit does not walk 288k dicts again.
            chunk = [{"connector": clean(o.connector), "action": clean(actions[o.action]),
                      "person": _clean(o.employee_id),
                      "target": clean(o.detail.get("group") or o.detail.get("grant")),
                      "rule": clean(o.detail.get("rule"))}
                     for o in ops[i:i + 5000]]
            yield "plan_operations", Redacted({"plan_id": plan_id, "offset": i, "operations": chunk}), "jml", None

    return records


# The keys of an operation in the audit's plan_operations chunks (none is a secret field name:
# tests/unit/test_sync_audit.py checks it against jml.redact).
OPERATION_KEYS = ("connector", "action", "person", "target", "rule")


def _clean(value: object) -> object:
    """What redact_data makes of a value (a text through redact, cached for short ones)."""
    return redact(value) if type(value) is str else redact_data(value)


def plan_json(outcome: PlanOutcome) -> dict[str, object]:
    """The `plan --json` shape (README "Commands"; tests/e2e/test_cli.py checks it)."""
    return {
        "plan_id": outcome.plan_id,
        "operations": [operation_json(o, operation_reason(o, outcome.why)) for o in outcome.operations],
        "summary": outcome.summary(),
        "guard": {"held": outcome.held, "reasons": outcome.reasons},
    }


_ACTION_VALUES = {a: a.value for a in Action}  # (Action.value is an enum property: a dict probe is cheaper)


def write_plan_json(outcome: PlanOutcome, write: Callable[[str], object], chunk: int = 2000) -> None:
    """`plan_json(outcome)` as `json.dumps(..., ensure_ascii=False, default=str)` writes it, byte
    for byte, but written `chunk` operations at a time: the plan is decided (guard included)
    before the first byte, and 288k operations never sit in memory twice more as dicts and as
    one string. The operations' text is built from pieces (jml.plan_json), not by the encoder."""
    def dumps(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)

    write('{"plan_id": ' + dumps(outcome.plan_id) + ', "operations": [')
    write_operations(outcome.operations, outcome.why, write, chunk)
    write('], "summary": ' + dumps(outcome.summary()) + ', "guard": '
          + dumps({"held": outcome.held, "reasons": outcome.reasons}) + "}")
