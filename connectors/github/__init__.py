"""GitHub (`type: github`): org mode (REST org + team memberships) or EMU mode (enterprise SCIM).

`connectors.base.build` calls `GithubConnector(name, cfg, ctx)`; it returns the mode's
connector. Modes are imported lazily, like every connector.
"""

from __future__ import annotations

from connectors.base import Connector, ConnectorContext
from jml.config import GithubConnectorConfig

__all__ = ["GithubConnector"]


def GithubConnector(name: str, cfg: GithubConnectorConfig, ctx: ConnectorContext) -> Connector:
    """The connector for `cfg.mode` (a factory named like the class other connectors export)."""
    if cfg.mode == "emu":
        from connectors.github.emu import GithubEmuConnector

        return GithubEmuConnector(name, cfg, ctx)
    from connectors.github.org import GithubOrgConnector

    return GithubOrgConnector(name, cfg, ctx)
