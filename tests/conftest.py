"""Suite-wide rule: a test either passes or fails — it does not skip.

A skipped test is one that cannot fail: a peer that is not there (PostgreSQL, promtool,
Chromium, GitHub's REST description) is a broken environment, and a capability a target lacks
is a case of the test, not a reason to leave it out. Under CI (`CI` set) or with
`JML_NO_SKIPS=1` (`make test` and `.ci/run` set it) any skip or xfail that still happens —
at collection or in a test — is turned into a failure that names the reason. `pytest -rs`
lists the rest when neither is set.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


def _strict() -> bool:
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in ("CI", "JML_NO_SKIPS"))


def _reason(report: Any) -> str:
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail or 'no reason given'}"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail(report: Any) -> None:
    report.outcome = "failed"
    report.longrepr = (f"{_reason(report)}\n-> a skip is a failure in this suite (CI / JML_NO_SKIPS): "
                       "install or start the missing peer, or make the missing capability a case of the test")
    if hasattr(report, "wasxfail"):
        del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if _strict() and (report.skipped or hasattr(report, "wasxfail")):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped:  # a module-level skip or importorskip
        _fail(report)
