"""The audit trail: append-only, each record chained to the previous by hash.

hash_n = sha256(hash_{n-1} + canonical JSON of record n). The head hash and the count
are kept in their own row, so deleting the newest records (a cut tail) is caught as
surely as editing one. Exports are JSON lines that `verify_lines` checks on their own.

This module is the chain itself (pure); the trail in the database is jml/store/audit.py.

Erasure (retention, jml/retention.py): a record holding a leaver's personal data is rewritten
with that data scrubbed and a marker `data["_erased"] = {"by": E, "data_sha256": …}`; its hash
and prev_hash are kept, so the chain around it still links. Such a record can no longer be
recomputed from its content, so the erasure record E (kind "erasure", appended to the chain
after it) lists for each record it rewrote the seq, the unchanged `hash` and `rest`: the sha256
of the rewritten record's canonical form. `verify_lines` checks every marked record against
the erasure record its marker names: editing what is left of an erased record, changing its
hash, marking a record erased that no erasure record lists, or editing the erasure record
itself are all caught.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from jml.jsontext import one_shot

GENESIS = "0" * 64
ERASURE_KIND = "erasure"
ERASED_KEY = "_erased"


# `json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)` byte
# for byte, from one encoder (json.dumps with arguments builds an encoder per call).
_DUMP = one_shot(json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str))


def dump(data: Any) -> str:
    return _DUMP(data)


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


def rest_hash(seq: int, at: str, kind: str, actor: str, subject: str | None, data: Any) -> str:
    """What an erasure record vouches for: the rewritten record's canonical form, hashed."""
    return hashlib.sha256(canonical(seq, at, kind, actor, subject, data).encode()).hexdigest()


def erased_by(data: Any) -> int | None:
    """The erasure record's seq, when this record's data was erased (None: an ordinary record)."""
    if isinstance(data, dict):
        marker = data.get(ERASED_KEY)
        if isinstance(marker, dict) and isinstance(marker.get("by"), int):
            return int(marker["by"])
    return None


def verify_lines(records: Iterable[dict[str, Any]], *, expect_count: int | None = None,
                 expect_head: str | None = None) -> VerifyResult:
    """Check a chain (from the database or an export). The first record may be any point
    of the chain (an export `--since`): its prev_hash is taken as given."""
    prev: str | None = None
    n = 0
    last_seq = None
    # Erased records seen and not yet vouched for: seq -> (erasure seq, hash, rest hash).
    pending: dict[int, tuple[int, str, str]] = {}
    for rec in records:
        n += 1
        seq = rec.get("seq")
        if rec.get("error"):
            return VerifyResult(False, n, f"record {seq}: {rec['error']}")
        if last_seq is not None and seq != last_seq + 1:
            return VerifyResult(False, n, f"record {seq}: sequence gap after {last_seq} (a record was deleted)")
        if prev is not None and rec.get("prev_hash") != prev:
            return VerifyResult(False, n, f"record {seq}: does not chain to record {last_seq}")
        data = rec.get("data")
        try:
            fields = (int(seq or 0), str(rec.get("at")), str(rec.get("kind")), str(rec.get("actor")),
                      rec.get("subject"))
            body = canonical(*fields, data)
        except (TypeError, ValueError):
            return VerifyResult(False, n, f"record {seq!r}: malformed (sequence number or subject unreadable)")
        by = erased_by(data)
        if by is not None:
            # Its content was rewritten: the erasure record `by`, later in the chain, vouches for it.
            if by <= fields[0]:
                return VerifyResult(False, n, f"record {seq}: marked erased by record {by}, which is not after it")
            pending[fields[0]] = (by, str(rec.get("hash")), hashlib.sha256(body.encode()).hexdigest())
        elif chain(str(rec.get("prev_hash")), body) != rec.get("hash"):
            return VerifyResult(False, n, f"record {seq}: content does not match its hash (edited)")
        if rec.get("kind") == ERASURE_KIND and isinstance(data, dict):
            problem = _vouch(fields[0], data, pending)
            if problem:
                return VerifyResult(False, n, problem)
        prev, last_seq = str(rec.get("hash")), seq
    if pending:
        seq = min(pending)
        return VerifyResult(False, n, f"record {seq}: marked erased by record {pending[seq][0]}, "
                                      "which does not list it (edited)")
    if expect_count is not None and last_seq != (expect_count or None):
        return VerifyResult(False, n, f"the chain ends at record {last_seq} but {expect_count} were written "
                                      "(records deleted from the end)")
    if expect_head is not None and n and prev != expect_head:
        return VerifyResult(False, n, "the last record's hash does not match the recorded head")
    return VerifyResult(True, n)


def _vouch(erasure_seq: int, data: dict[str, Any], pending: dict[int, tuple[int, str, str]]) -> str:
    """Check the erased records an erasure record lists; '' when they match."""
    for entry in data.get("records") or []:
        if not isinstance(entry, dict):
            return f"record {erasure_seq}: malformed erasure entry"
        seq = entry.get("seq")
        if not isinstance(seq, int) or seq not in pending:
            continue  # before this export's first record, or rewritten again by a later erasure
        by, h, rest = pending[seq]
        if h != entry.get("hash"):
            return f"record {seq}: its hash is not the one erasure record {erasure_seq} kept (edited)"
        if by != erasure_seq:
            continue  # a later erasure rewrote it again and vouches for what is there now
        if rest != entry.get("rest"):
            return f"record {seq}: content does not match what erasure record {erasure_seq} left (edited)"
        del pending[seq]
    return ""
