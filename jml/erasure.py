"""Erasing a leaver's personal data from stored values (pure: the store applies it, jml/retention.py decides who).

A person's *terms* are the strings that identify them (names, e-mail addresses, usernames,
their GitHub login); `scrub` replaces every whole-word, case-insensitive occurrence of a term
in a value — a JSON document walked by structure, or a free-text column — with `ERASED`.
The employee id is kept: it is the pseudonym that keeps counts and SLA reports adding up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

ERASED = "[erased]"

# Person fields that identify someone (jml/model.py Person); an HR export's extra columns whose
# name says so are treated the same (personal_email, private_phone, ...).
PERSONAL_FIELDS = ("first_name", "last_name", "preferred_name", "work_email", "github_username")
_PERSONAL_EXTRA = re.compile(r"(?i)(name|mail|phone|address|birth|login|user)")
# Fields kept in an erased person's document: enough for the lifecycle to keep them a leaver.
KEPT_FIELDS = ("employee_id", "status", "hire_date", "termination_date")
# A term shorter than this matches too much to be worth it (an initial, "Li" in "Linux" is
# guarded by the word boundary, but "A" is not a name worth a scan).
_MIN_TERM = 2


def terms_of(person: Mapping[str, Any] | None, usernames: Iterable[str] = ()) -> set[str]:
    """The strings that identify a person: their personal fields, personal extra columns, usernames."""
    out: set[str] = set()
    doc = dict(person or {})
    for key in PERSONAL_FIELDS:
        value = doc.get(key)
        if isinstance(value, str):
            out.add(value)
    first = doc.get("preferred_name") or doc.get("first_name")
    if isinstance(first, str) and isinstance(doc.get("last_name"), str):
        out.add(f"{first} {doc['last_name']}")  # the display name, as pages and messages show it
    extra = doc.get("extra")
    if isinstance(extra, Mapping):
        out.update(v for k, v in extra.items() if isinstance(v, str) and _PERSONAL_EXTRA.search(str(k)))
    for u in usernames:
        out.add(u)
        if "@" in u:
            out.add(u.split("@", 1)[0])  # the local part: an app's login, a mailbox name
    return {t.strip() for t in out if t and len(t.strip()) >= _MIN_TERM}


def pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for all terms, longest first (a full name before its first name); None: no terms."""
    ordered = sorted({t for t in terms if t}, key=len, reverse=True)
    if not ordered:
        return None
    # Word boundaries written out: \b would not hold at an e-mail's '@' or '.' edges.
    return re.compile(r"(?<![\w.@+-])(?:" + "|".join(re.escape(t) for t in ordered) + r")(?![\w@+-]|\.\w)",
                      re.IGNORECASE)


def scrub_text(text: str, pat: re.Pattern[str]) -> str:
    return pat.sub(ERASED, text)


def scrub(value: Any, pat: re.Pattern[str]) -> Any:
    """`value` with every term replaced, walked by structure (dict keys are field names: kept)."""
    if isinstance(value, str):
        return pat.sub(ERASED, value)
    if isinstance(value, Mapping):
        return {k: scrub(v, pat) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, pat) for v in value]
    return value


def erased_person(doc: Mapping[str, Any] | None, employee_id: str) -> dict[str, Any]:
    """An erased person's stored document: the employee id, status and dates, nothing else."""
    src = dict(doc or {})
    out = {k: src[k] for k in KEPT_FIELDS if k in src}
    out["employee_id"] = employee_id
    return out
