"""One error hierarchy. Foreign exceptions are translated at the edge where they happen,
so the engine and the CLI decide on these types only.

Messages name the thing to fix (key path, file and row, connector) and never carry a
secret: connectors pass vendor messages through `redact` before raising.
"""

from __future__ import annotations

from jml.redact import redact


class JMLError(Exception):
    """Base of every error jml raises on purpose."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(ValueError):
    """A request or event jml does not accept; the message says why (an HTTP 400 sends it back)."""


class ConfigError(JMLError):
    """The configuration is unusable; `path` is the key path (e.g. connectors.demo.url)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UsageError(JMLError):
    pass


class SourceError(JMLError):
    """An HR export (or one of its rows) cannot be used."""

    def __init__(self, message: str, file: str = "", row: int | None = None, field: str = "") -> None:
        self.file, self.row, self.field = file, row, field
        where = file
        if row is not None:
            where += f", row {row}"
        if field:
            where += f", field {field}"
        super().__init__(f"{where}: {message}" if where else message)


class ExportRejected(SourceError):
    """The export as a whole is structurally unsound; nothing from it is planned."""

    exit_code = 3


class WriteConflict(JMLError):
    """The database kept refusing a write for conflicting with other writers (jml.store.retry
    gave up): the job stops here, it never carries on as if the write had happened."""

    exit_code = 1


class GuardHeld(JMLError):
    """A plan was held for approval."""

    exit_code = 3

    def __init__(self, plan_id: str, reasons: list[str]) -> None:
        self.plan_id, self.reasons = plan_id, reasons
        super().__init__(f"plan {plan_id} held: " + "; ".join(reasons))


class ConnectorError(JMLError):
    """A connector call failed. `vendor_message` is the app's own words (redacted)."""

    exit_code = 1
    retryable = False

    def __init__(
        self,
        connector: str,
        message: str,
        *,
        status: int | None = None,
        vendor_message: str = "",
    ) -> None:
        self.connector, self.status = connector, status
        self.vendor_message = redact(vendor_message)
        text = f"{connector}: {message}"
        if status is not None:
            text += f" (HTTP {status})"
        if vendor_message:
            text += f": {self.vendor_message}"
        super().__init__(text)


class RetryableError(ConnectorError):
    """Timeouts, resets, 429, 5xx: worth another attempt, after `retry_after` if given."""

    retryable = True

    def __init__(
        self,
        connector: str,
        message: str,
        *,
        status: int | None = None,
        vendor_message: str = "",
        retry_after: float | None = None,
        reason: str = "error",
    ) -> None:
        self.retry_after = retry_after
        self.reason = reason  # metric label: rate_limited | server_error | timeout | connection
        super().__init__(connector, message, status=status, vendor_message=vendor_message)


class PermanentError(ConnectorError):
    """Other 4xx: retrying will not help; the operation is dead-lettered."""


class ConflictError(ConnectorError):
    """The resource already exists (409, Slack email_taken): find it and adopt it."""


class NotFoundError(ConnectorError):
    """The resource is not there (404). For a delete this is success."""
