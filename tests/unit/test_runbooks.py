"""The runbooks (docs/runbooks) point at things that exist: every alert rule names a runbook file
that is there, every runbook is linked from the index and the README, every `jml …` command a
runbook tells someone to run is a real command and subcommand, and every button a runbook tells
someone to press is a label the web pages render."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from jml import cli

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
BOOKS = sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: str(r["alert"]))
def test_every_alert_names_a_runbook_that_exists(rule: dict[str, object]) -> None:
    url = (rule.get("annotations") or {}).get("runbook_url")  # type: ignore[attr-defined]
    assert url, f"alert {rule['alert']} has no runbook_url annotation"
    path = ROOT / str(url).split("#")[0]
    assert path.is_file() and path.parent == RUNBOOKS, url
    assert str(rule["alert"]) in path.read_text(encoding="utf-8"), f"{url} does not name the alert {rule['alert']}"


def test_every_runbook_is_linked_from_the_index_and_the_readme() -> None:
    assert len(BOOKS) >= 15
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/runbooks/README.md" in readme
    for book in BOOKS:
        assert f"({book.name})" in index, f"{book.name} is not in docs/runbooks/README.md"
        for link in re.findall(r"\]\(([\w-]+\.md)\)", book.read_text(encoding="utf-8")):
            assert (RUNBOOKS / link).is_file(), f"{book.name} links to {link}, which does not exist"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.name)
def test_every_command_in_a_runbook_exists(book: Path) -> None:
    commands = _subcommands(cli._parser())
    text = book.read_text(encoding="utf-8")
    for cmd in re.findall(r"`jml ([^`]+)`", text):
        words = [w for w in cmd.split() if not w.startswith(("<", "-", '"')) and "…" not in w]
        assert words and words[0] in commands, f"{book.name}: `jml {cmd}`: no command {words[0] if words else ''}"
        sub = _subcommands(commands[words[0]])
        if sub and len(words) > 1:
            assert words[1] in sub, f"{book.name}: `jml {cmd}`: no subcommand {words[1]}"
        flags = re.findall(r"(?<![\w-])(--[a-z-]+)", cmd)
        known = {o for a in commands[words[0]]._actions for o in a.option_strings}
        if sub and len(words) > 1:
            known |= {o for a in sub[words[1]]._actions for o in a.option_strings}
        for flag in flags:
            assert flag in known, f"{book.name}: `jml {cmd}`: no option {flag}"


# The buttons the runbooks name, as the pages render them (<name>, <id> stand for values).
BUTTONS = ["Approve plan", "Discard plan", "Retry #", "Retry all", "Discard #", "Resume", "Pause",
           "Offboard now…", "Undo offboarding…", "Yes, undo it", "Yes, offboard "]


def test_every_button_a_runbook_names_is_rendered_by_a_page() -> None:
    web = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "jml" / "web").glob("*.py"))
    named = set()
    for book in BOOKS:
        for label in re.findall(r"\*\*([^*]+)\*\*", book.read_text(encoding="utf-8")):
            for b in BUTTONS:
                if label.startswith(b):
                    named.add(b)
    assert named >= {"Approve plan", "Discard plan", "Retry all", "Resume", "Offboard now…"}, named
    for b in named:
        pattern = {"Resume": "verb.capitalize()", "Pause": "verb.capitalize()"}.get(b, b)
        assert pattern in web, f"no page renders a {b!r} button"
