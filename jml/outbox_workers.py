"""The outbox workers as jml runs them (`jml serve`, `jml sync`, `jml offboard`): the engine
over the runtime's connectors, each with its retry policy, concurrency and timeout, and the
SLA read-back of a leaver's last deprovision on the engine's successes."""

from __future__ import annotations

from jml import sla
from jml.engine import Engine
from jml.lanes import RetryPolicy
from jml.runtime import Runtime

__all__ = ["build_engine"]


def build_engine(rt: Runtime, poll_interval: float = 0.5) -> Engine:
    cfgs = rt.config.connectors
    engine = Engine(
        rt.store, rt.connectors(),
        concurrency={n: c.concurrency for n, c in cfgs.items()},
        retry={n: RetryPolicy(max_attempts=c.max_attempts, budget=c.retry_budget.total_seconds(),
                           initial=c.retry_backoff.total_seconds(), maximum=c.retry_backoff_max.total_seconds())
               for n, c in cfgs.items()},
        timeouts={n: c.timeout.total_seconds() for n, c in cfgs.items()},
        audit=rt.audit, clock=rt.clock, poll_interval=poll_interval)
    # A leaver's last deprovision in a connector is read back to stop the SLA clock.
    engine.after_success.append(sla.Verifier(rt, engine.busy).hook(engine.spawn))
    return engine
