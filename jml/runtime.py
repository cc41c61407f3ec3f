"""Wiring: a Config turned into the store, the policy, the connectors and the engine."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from connectors.base import Connector, ConnectorContext
from connectors.registry import build, traits_for
from jml import metrics
from jml.config import Config, resolve_secret
from jml.engine import utcnow
from jml.guard import Limits
from jml.lifecycle import LifecycleRules
from jml.model import ConnectorTraits
from jml.policy import Policy
from jml.store.audit import AuditLog
from jml.store.outbox import Outbox, process_holder
from jml.store.repo import Store

Clock = Callable[[], dt.datetime]


SECRET_REUSE = 1.0  # seconds a connector's secret, once read, is used without reading it again


@dataclass
class Runtime:
    config: Config
    clock: Clock = utcnow
    store_override: Store | None = None
    # Named after this process, so a lease left by a killed process is taken over at once.
    holder: str = field(default_factory=process_holder)
    _connectors: dict[str, Connector] = field(default_factory=dict)

    @cached_property
    def store(self) -> Store:
        return self.store_override or Store(self.config.state.url)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.store)

    @cached_property
    def policy(self) -> Policy:
        p = self.config.policy
        return Policy.build(p.username, [(r.name, r.when, r.grant) for r in p.rules], p.protected)

    @cached_property
    def rules(self) -> LifecycleRules:
        lc = self.config.lifecycle
        return LifecycleRules(
            timezone=self.config.timezone,
            prehire_days=lc.prehire_days,
            delete_after=lc.delete_after,
            leave_of_absence=lc.leave_of_absence,
            missing_after=lc.missing_after,
            termination_time=lc.termination_clock,
        )

    @cached_property
    def traits(self) -> dict[str, ConnectorTraits]:
        out = {}
        for name, cfg in self.config.connectors.items():
            t = traits_for(name, cfg)
            attr = getattr(cfg, "username_attribute", None) if cfg.type == "github" and cfg.mode == "org" else None
            out[name] = ConnectorTraits(
                name=t.name, kind=t.kind, assignment_grants=t.assignment_grants, create_action=t.create_action,
                can_delete=t.can_delete, supports_inactive_create=t.supports_inactive_create,
                required_attribute=attr or t.required_attribute, username_template=cfg.username)
        return out

    @cached_property
    def limits(self) -> Limits:
        g = self.config.guard
        return Limits(g.max_deprovision_percent, g.max_deprovision_count, g.max_shrink_percent)

    def connector_limits(self) -> dict[str, Limits]:
        out = {}
        for name, cfg in self.config.connectors.items():
            if cfg.guard is not None:
                base = self.limits
                out[name] = Limits(
                    cfg.guard.max_deprovision_percent if cfg.guard.max_deprovision_percent is not None
                    else base.max_deprovision_percent,
                    cfg.guard.max_deprovision_count if cfg.guard.max_deprovision_count is not None
                    else base.max_deprovision_count,
                    base.max_shrink_percent)
        return out

    def secret_getter(self, section: Any, path: str) -> Callable[[str], str | None]:
        """A connector's secrets, re-read at most every SECRET_REUSE seconds: a rotated token
        (a `*_file` changed) is picked up within that, and a request does not pay for reading
        the environment or stat-ing the file (every request asks)."""
        kept: dict[str, tuple[float, str | None]] = {}

        def get(name: str) -> str | None:
            now = time.monotonic()
            hit = kept.get(name)
            if hit is not None and now - hit[0] < SECRET_REUSE:
                return hit[1]
            value = resolve_secret(section, name, path, required=False)
            kept[name] = (now, value)
            return value
        return get

    def connector(self, name: str) -> Connector:
        if name not in self._connectors:
            cfg = self.config.connectors[name]
            ctx = ConnectorContext(name=name, secret=self.secret_getter(cfg, f"connectors.{name}"),
                                   observe=lambda c, method, secs, status: metrics.observe_http(c, method, secs,
                                                                                                status),
                                   recall=functools.partial(self.store.dialects.load, name),
                                   remember=functools.partial(self.store.dialects.merge, name),
                                   remote_id_of=functools.partial(self.store.remote_id, name))
            self._connectors[name] = build(name, cfg, ctx)
        return self._connectors[name]

    def connectors(self) -> dict[str, Connector]:
        return {name: self.connector(name) for name in self.config.connectors}

    async def open_connectors(self) -> None:
        for c in self.connectors().values():
            await c.open()

    async def close(self) -> None:
        for c in self._connectors.values():
            with contextlib.suppress(Exception):  # closing is best effort
                await c.close()
        self._connectors.clear()
