"""Generic SCIM 2.0 connector (`type: scim`); vendor SCIM connectors subclass ScimConnector."""

from connectors.scim.connector import ScimConnector

__all__ = ["ScimConnector"]
