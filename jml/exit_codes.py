"""The command line's exit codes (README "Commands"), shared by every command."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_SAFETY", "EXIT_USAGE"]

EXIT_OK = 0  # done
EXIT_FAILED = 1  # some operation failed or was dead-lettered, or `check` found a problem
EXIT_USAGE = 2  # usage, config or input error: one line on stderr, never a traceback
EXIT_SAFETY = 3  # safety stop: the plan was held or the export rejected (also under --dry-run)
