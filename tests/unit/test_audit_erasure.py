"""The audit chain with erased records (jml/audit.py): an erasure vouched for by its erasure
record verifies; every way of tampering around it does not. Pure: the chain is built here."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from jml.audit import ERASED_KEY, GENESIS, canonical, chain, dump, rest_hash, verify_lines
from jml.erasure import ERASED, pattern, scrub, terms_of

AT = "2026-12-01T10:00:00+00:00"


def _chain(datas: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    out, prev = [], GENESIS
    for i, (kind, data) in enumerate(datas, 1):
        h = chain(prev, canonical(i, AT, kind, "jml", "E1", data))
        out.append({"seq": i, "at": AT, "kind": kind, "actor": "jml", "subject": "E1", "data": data,
                    "prev_hash": prev, "hash": h})
        prev = h
    return out


def _append(recs: list[dict[str, Any]], kind: str, data: Any) -> None:
    prev, seq = recs[-1]["hash"], recs[-1]["seq"] + 1
    recs.append({"seq": seq, "at": AT, "kind": kind, "actor": "jml", "subject": None, "data": data, "prev_hash": prev,
                 "hash": chain(prev, canonical(seq, AT, kind, "jml", None, data))})


def _erase(recs: list[dict[str, Any]], seqs: list[int]) -> list[dict[str, Any]]:
    """What jml/store/retention.py does: rewrite, mark, then append the erasure record."""
    recs = copy.deepcopy(recs)
    by = recs[-1]["seq"] + 1
    pat = pattern(["Alice", "alice@example.com"])
    assert pat is not None
    entries = []
    for r in recs:
        if r["seq"] in seqs:
            original = hashlib.sha256(dump(r["data"]).encode()).hexdigest()
            r["data"] = {**scrub(r["data"], pat), ERASED_KEY: {"by": by, "data_sha256": original}}
            entries.append({"seq": r["seq"], "hash": r["hash"],
                            "rest": rest_hash(r["seq"], r["at"], r["kind"], r["actor"], r["subject"], r["data"])})
    _append(recs, "erasure", {"records": entries, "people": 1})
    return recs


BASE = [("push", {"name": "Alice", "email": "alice@example.com"}), ("plan", {"n": 1}),
        ("push", {"name": "Alice Smith"}), ("plan", {"n": 2})]


def _set(seq: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def f(recs: list[dict[str, Any]]) -> None:
        recs[seq - 1][key] = value
    return f


def _forge_marker(recs: list[dict[str, Any]]) -> None:
    recs[1]["data"] = {"n": 99, ERASED_KEY: {"by": 5, "data_sha256": "0" * 64}}


def _edit_erasure(recs: list[dict[str, Any]]) -> None:
    recs[4]["data"]["people"] = 7


@pytest.mark.parametrize(("tamper", "problem"), [
    (None, ""),
    (_set(1, "kind", "other"), "record 1: content does not match what erasure record 5 left"),
    (_set(3, "data", {"name": "Mallory", ERASED_KEY: {"by": 5, "data_sha256": "x"}}), "record 3: content"),
    (_set(1, "hash", "f" * 64), "record 2: does not chain to record 1"),
    (_forge_marker, "record 2: marked erased by record 5, which does not list it"),
    (_edit_erasure, "record 5: content does not match its hash"),
    (_set(2, "data", {"n": 3}), "record 2: content does not match its hash"),
])
def test_erased_records_verify_and_tampering_is_caught(tamper: Any, problem: str) -> None:
    recs = _erase(_chain(BASE), [1, 3])
    assert "Alice" not in repr([r["data"] for r in recs]) and ERASED in repr(recs[0]["data"])
    if tamper is not None:
        tamper(recs)
    result = verify_lines(recs, expect_count=5, expect_head=recs[-1]["hash"])
    assert result.ok == (not problem), result
    assert problem in result.problem


def test_an_export_from_after_the_erased_records_verifies() -> None:
    recs = _erase(_chain(BASE), [1, 3])
    assert verify_lines(recs[3:]).ok  # starts after the erased records: the erasure entries are skipped


def test_a_second_erasure_of_the_same_record_verifies() -> None:
    recs = _erase(_chain(BASE), [1])
    recs = _erase(recs, [1, 3])
    assert recs[0]["data"][ERASED_KEY]["by"] == 6
    assert verify_lines(recs, expect_count=6, expect_head=recs[-1]["hash"]).ok


def test_a_marker_pointing_backwards_is_refused() -> None:
    recs = _chain(BASE)
    recs[2]["data"] = {ERASED_KEY: {"by": 1}}
    assert "not after it" in verify_lines(recs).problem


@pytest.mark.parametrize(("text", "expected"), [
    ("Alice Smith left", f"{ERASED} left"),
    ("mail alice.smith@example.com now", f"mail {ERASED} now"),
    ("Malice and Alicent stay", "Malice and Alicent stay"),  # whole words only
    ("user alice.smith logged in", f"user {ERASED} logged in"),  # the e-mail's local part
])
def test_scrub_replaces_whole_terms_only(text: str, expected: str) -> None:
    terms = terms_of({"first_name": "Alice", "last_name": "Smith", "work_email": "alice.smith@example.com"},
                     ["alice.smith@example.com"])
    pat = pattern(terms)
    assert pat is not None
    assert scrub(text, pat) == expected
