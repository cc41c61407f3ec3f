"""The connector contract: what every connector must do, whatever the app behind it.

Each target module (`target_<name>.py` beside this file) exports `TARGET`, a
`TargetFactory`: an async context manager factory yielding a `ContractTarget` wired to a
fresh real peer on loopback. `test_contract.py` runs the same tests over every target.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from connectors.base import Connector
from jml.model import RemoteAccount


@dataclass
class ContractTarget:
    connector: Connector
    # Two grant names valid for this connector (e.g. "group:eng", "team:eng", "PS@111111111111").
    grants: tuple[str, str]
    # Read an account from the peer's side, not through the connector: by employee_id and username.
    inspect: Callable[[str, str], Awaitable[RemoteAccount | None]]
    # Make the peer answer the next write with 429 + Retry-After: seconds.
    inject_429: Callable[[float], None]
    # Make the peer answer the next write with a permanent error carrying this vendor message.
    inject_permanent: Callable[[str], None]
    # Create an account directly in the peer (for adopt-on-conflict): username, employee_id or None.
    precreate: Callable[[str, str | None], Awaitable[None]]
    # Delete an account directly in the peer (for 404-on-delete).
    remove_remote: Callable[[str], Awaitable[None]]
    # Attributes a user record must carry for this vendor (e.g. github_username).
    attributes: dict[str, str]
    supports_delete: bool = True
    supports_update: bool = True
    extra: Any = None


TargetFactory = Callable[[], AbstractAsyncContextManager[ContractTarget]]
ContractTargetIter = AsyncIterator[ContractTarget]
