"""The audit trail: append-only, each record chained to the previous by hash.

hash_n = sha256(hash_{n-1} + canonical JSON of record n). The head hash and the count
are kept in their own row, so deleting the newest records (a cut tail) is caught as
surely as editing one. Exports are JSON lines that `verify_lines` checks on their own.

This module is the chain itself (pure); the trail in the database is jml/store/audit.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

GENESIS = "0" * 64


def dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _text(value: str | None) -> str:
    # What json.dumps(ensure_ascii=False) writes for a str or None, without its machinery.
    return "null" if value is None else encode_basestring(value)


def canonical(seq: int, at: str, kind: str, actor: str, subject: str | None, data: Any,
              data_json: str | None = None) -> str:
    """The hashed form of a record: sorted-key compact JSON (data serialised once)."""
    body = dump(data) if data_json is None else data_json
    return (f'{{"actor":{_text(actor)},"at":{_text(at)},"data":{body},"kind":{_text(kind)},'
            f'"seq":{seq},"subject":{_text(subject)}}}')


def chain(prev_hash: str, record: str) -> str:
    return hashlib.sha256((prev_hash + record).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int
    problem: str = ""


def verify_lines(records: Iterable[dict[str, Any]], *, expect_count: int | None = None,
                 expect_head: str | None = None) -> VerifyResult:
    """Check a chain (from the database or an export). The first record may be any point
    of the chain (an export `--since`): its prev_hash is taken as given."""
    prev: str | None = None
    n = 0
    last_seq = None
    for rec in records:
        n += 1
        seq = rec.get("seq")
        if rec.get("error"):
            return VerifyResult(False, n, f"record {seq}: {rec['error']}")
        if last_seq is not None and seq != last_seq + 1:
            return VerifyResult(False, n, f"record {seq}: sequence gap after {last_seq} (a record was deleted)")
        if prev is not None and rec.get("prev_hash") != prev:
            return VerifyResult(False, n, f"record {seq}: does not chain to record {last_seq}")
        try:
            body = canonical(int(seq or 0), str(rec.get("at")), str(rec.get("kind")), str(rec.get("actor")),
                             rec.get("subject"), rec.get("data"))
        except (TypeError, ValueError):
            return VerifyResult(False, n, f"record {seq!r}: malformed (sequence number or subject unreadable)")
        if chain(str(rec.get("prev_hash")), body) != rec.get("hash"):
            return VerifyResult(False, n, f"record {seq}: content does not match its hash (edited)")
        prev, last_seq = str(rec.get("hash")), seq
    if expect_count is not None and last_seq != (expect_count or None):
        return VerifyResult(False, n, f"the chain ends at record {last_seq} but {expect_count} were written "
                                      "(records deleted from the end)")
    if expect_head is not None and n and prev != expect_head:
        return VerifyResult(False, n, "the last record's hash does not match the recorded head")
    return VerifyResult(True, n)
