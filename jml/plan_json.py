"""The operations of `jml plan --json`, written as JSON text joined from pieces (issue 16: at
100k people a plan has 290k operations; a dict built per operation and json's encoder run over
them took a quarter of the command).

The text is byte for byte what `json.dumps(plan_json(outcome), ensure_ascii=False, default=str)`
gives (jml.sync.plan_json; tests/unit/test_plan_json_stream.py checks it). Only the common case
is built here: a detail that is a plain dict with str keys, its values str, true, false or null.
Every other value (a number, a list, a dict, a date, a str subclass) is encoded by the json
encoder itself, and an operation that does not fit at all (a non-str key, a detail with its own
"reason", a connector or person that is no plain str) is encoded whole by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring

from jml.explain import operation_reason
from jml.jsontext import one_shot
from jml.model import Action, Operation

__all__ = ["operation_json", "write_operations"]

# json.dumps(value, ensure_ascii=False, default=str) is this encoder's encode(value); for a str it
# is encode_basestring(value).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_CONSTANTS: dict[object, str] = {True: "true", False: "false", None: "null"}
_STR = frozenset({str})


def operation_json(op: Operation, reason: str) -> dict[str, object]:
    """One operation in the `plan --json` shape, its reason after the detail's own keys."""
    return {"connector": op.connector, "action": op.action.value, "person": op.employee_id,
            "detail": {**op.detail, "reason": reason}}


class _Keys(dict[str, str]):
    """A detail key -> its JSON text and the separator after it, '"group": ' (the keys repeat)."""

    def __missing__(self, key: str) -> str:
        text = self[key] = encode_basestring(key) + ": "
        return text


# json.dumps(value, ensure_ascii=False, default=str), from one encoder (jml.jsontext): for a
# create's attributes (100k small dicts at 100k people) JSONEncoder.encode remade its C core per call.
_ENCODE = one_shot(_ENCODER)


def _value(value: object) -> str:
    """A detail value other than a str."""
    if value is None or value is True or value is False:
        return _CONSTANTS[value]
    return _ENCODE(value)


def _encoded(ops: Sequence[Operation], why: Mapping[str, str], keys: _Keys,
             heads: dict[tuple[str, Action], str]) -> list[str]:
    """Each operation's JSON text."""
    out: list[str] = []
    append = out.append
    last_person: object = None
    person_text = ""
    for op in ops:
        detail = op.detail
        reason = operation_reason(op, why)
        person, connector = op.employee_id, op.connector
        if (type(detail) is not dict or "reason" in detail or type(reason) is not str or type(person) is not str
                or type(connector) is not str or not _STR.issuperset(map(type, detail))):
            append(_ENCODE(operation_json(op, reason)))
            continue
        head = heads.get((connector, op.action))
        if head is None:  # '{"connector": "app", "action": "create", "person": '
            head = heads[(connector, op.action)] = (
                f'{{"connector": {encode_basestring(connector)}, "action": {encode_basestring(op.action.value)}, '
                '"person": ')
        if person is not last_person:  # a person's operations come one after another
            last_person, person_text = person, encode_basestring(person)
        parts = [keys[k] + (encode_basestring(v) if type(v) is str else _value(v)) for k, v in detail.items()]
        parts.append('"reason": ' + encode_basestring(reason))
        append(f'{head}{person_text}, "detail": {{{", ".join(parts)}}}}}')
    return out


def write_operations(ops: Sequence[Operation], why: Mapping[str, str], write: Callable[[str], object],
                     chunk: int = 2000) -> None:
    """The operations of `plan --json`, separated by ", " (no brackets), written `chunk` at a
    time; `why` is the plan's employee_id -> reason in words (PlanOutcome.why)."""
    keys = _Keys()
    heads: dict[tuple[str, Action], str] = {}
    for i in range(0, len(ops), chunk):
        if i:
            write(", ")
        write(", ".join(_encoded(ops[i:i + chunk], why, keys, heads)))
