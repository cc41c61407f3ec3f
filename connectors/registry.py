"""Which connector class serves which `type:` in the config: the one place that knows
every concrete connector. Imports lazily, so an unconfigured connector never imports its
SDK (boto3 for AWS), and connectors/base.py depends on none of them."""

from __future__ import annotations

from typing import Any

from connectors.base import Connector, ConnectorContext
from connectors.traits import traits_for

__all__ = ["build", "traits_for"]


def build(name: str, cfg: Any, ctx: ConnectorContext) -> Connector:
    """Build the connector for a config section. Imports lazily: an unconfigured
    connector never imports its SDK."""
    kind = cfg.type
    if kind == "scim":
        from connectors.scim import ScimConnector

        return ScimConnector(name, cfg, ctx)
    if kind == "aws_identity_center":
        from connectors.aws_identity_center import AwsIdentityCenterConnector

        return AwsIdentityCenterConnector(name, cfg, ctx)
    if kind == "github":
        from connectors.github import GithubConnector

        return GithubConnector(name, cfg, ctx)
    if kind == "slack":
        from connectors.slack import SlackConnector

        return SlackConnector(name, cfg, ctx)
    raise ValueError(f"unknown connector type {kind!r}")
