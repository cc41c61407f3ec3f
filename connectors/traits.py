"""The planner's view of each connector type (what it can do), without building one: read by
the runtime for planning and by the connectors themselves. Apart from connectors/registry.py,
so that a connector importing it does not import the registry that imports every connector."""

from __future__ import annotations

from typing import Any

from jml.model import ConnectorTraits

__all__ = ["traits_for"]


def traits_for(name: str, cfg: Any) -> ConnectorTraits:
    """The planner's view of a configured connector, without building it."""
    kind = cfg.type
    if kind == "aws_identity_center":
        return ConnectorTraits(name=name, kind=kind, assignment_grants=True)
    if kind == "github" and cfg.mode == "org":
        return ConnectorTraits(name=name, kind=kind, create_action="invite", can_delete=False,
                               supports_inactive_create=False)
    return ConnectorTraits(name=name, kind=kind)
