"""The deprovision SLA clock: one per leaver per connector.

- **Start**: the person's effective termination (HR date at `termination_time` local, the
  webhook's event time, the offboard time — `person.effective_termination`), else the
  plan time. `start_for_plan` opens the clocks of a plan's leaver operations, held or not.
- **Deadline**: start + `cfg.connector_sla(connector)`.
- **Stop**: only when the deprovision is *verified*: after the person's last leaver
  operation in that connector succeeds, the account is read back from the app and must be
  inactive (or gone), out of every group and without assignments. If it is not, the clock
  keeps running, the recorded account is set back to what the app still holds so the
  planner pushes again, the person is re-planned (at most once a minute) and the failure
  is audited, logged and counted.
- **Breach**: marked on the clock (`breached`), logged, audited and counted once — by
  `tick()` as soon as the deadline passes, or at verification if that comes first.
- **Prediction**: completion ≈ now + (leaver operations ahead in the connector's outbox,
  its own included) / the connector's write rate + typical operation latency; a held plan
  or a paused connector never completes by itself. Flagged when that is past the deadline.

The judgements (start, deadline, prediction, verification verdict) are small pure
functions in jml/sla_rules.py. The shell around them: the clocks in the store
(jml/sla_clocks.py), verification (jml/sla_verify.py), prediction and gauges
(jml/sla_forecast.py); this module is the scheduled tick that ties them together and the
surface the rest of jml uses.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from jml.model import Phase
from jml.sla_clocks import OPEN_STATES, Clock, clocks, count_breach, leaver_ops, set_clock, start_for_plan
from jml.sla_forecast import InFlight, assess, in_flight, refresh
from jml.sla_rules import (  # the pure judgements, re-exported for the shell's callers
    Verdict,
    _check,
    clock_start,
    deadline_for,
    humanize,
    judge,
    month_range,
    parse_check,
    predict_completion,
    seconds_per_op,
    will_breach,
)
from jml.sla_verify import Verifier, replan, verify, verify_batch, verify_due

if TYPE_CHECKING:
    from jml.context import ServiceContext
    from jml.runtime import Runtime

log = logging.getLogger("jml.sla")

__all__ = ["Clock", "InFlight", "Verdict", "Verifier", "assess", "clock_start", "clocks", "deadline_for", "humanize",
           "in_flight", "judge", "month_range", "parse_check", "predict_completion", "refresh", "replan",
           "seconds_per_op", "start_for_plan", "tick", "verify", "verify_batch", "will_breach"]


async def tick(ctx: ServiceContext) -> None:
    """Every 15 s in `jml serve`: mark breaches, verify what is due, cancel clocks of people
    who are no longer leavers, refresh predictions and the SLA gauges (and jml_plans_held)."""
    rt = ctx.rt
    now = rt.clock()
    for clock in clocks(rt, open_only=True):
        if clock.deadline < now and not clock.breached:
            count_breach(rt, clock, now)
    await verify_due(rt, now)
    _cancel_stale(rt, now)
    refresh(rt, rt.clock())


def _cancel_stale(rt: Runtime, now: dt.datetime) -> None:
    """A clock whose person is no longer a leaver and has no leaver work queued (rehire,
    offboard undone, a discarded plan of bad data) stops without counting."""
    open_clocks = clocks(rt, open_only=True)
    if not open_clocks:
        return
    eids = sorted({c.employee_id for c in open_clocks})
    phases = rt.store.sla.phases(eids)
    for clock in open_clocks:
        phase = phases.get(clock.employee_id)
        if phase in (Phase.LEAVER.value, Phase.GONE.value) or phase is None:
            continue
        if leaver_ops(rt, clock.connector, clock.employee_id, OPEN_STATES):
            continue
        if set_clock(rt, clock.id, predicted_breach=False,
                     last_check=_check("cancelled", now, f"no longer a leaver (phase {phase})")):
            rt.audit.append("sla_cancelled", {"connector": clock.connector, "phase": phase,
                                              "started_at": clock.started_at.isoformat()},
                            now=now, subject=clock.employee_id)
            log.info("deprovision SLA clock cancelled: no longer a leaver",
                     extra={"connector": clock.connector, "employee_id": clock.employee_id, "phase": phase})
