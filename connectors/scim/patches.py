"""PATCH bodies (RFC 7644 §3.5.2 PatchOp messages), without I/O: one job, the bodies of the
SCIM PATCH requests protocol.py prepares.

Each body is built and checked by scim2-models (PatchOp[User], PatchOp[Group]), so a PATCH that
RFC 7643 would reject never leaves jml. That check costs milliseconds a body, paid for every
leaver and every update, so the common ones are built without it once it has passed: the
deactivation body is built once and copied, and an operation of a kind the models have checked
and left exactly as given (a text or flag at a path, a plain member id in a filter) is written
as it is (see `_checked_patch`).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from scim2_models import Context, Group, PatchOp, PatchOperation, User

from connectors.scim.protocol import CORE_PATHS, ENTERPRISE, ENTERPRISE_KEYS, FullUser, Shape, eq_filter, member_values


@functools.cache
def _patch_models(resource: type[Any]) -> tuple[type[Any], type[Any]]:
    """PatchOp[R] and PatchOperation[R], built once and held. pydantic caches parametrised
    generics only weakly, so an unheld PatchOp[Group] is rebuilt (tens of ms, docstring
    extraction included) whenever the collector has run: hundreds of times per leaver wave."""
    return PatchOp[resource], PatchOperation[resource]  # type: ignore[valid-type]


def deactivation_patch(enterprise: bool) -> dict[str, Any]:
    """PATCH `active` false: every leaver's first write, the same body each time. Built and
    checked by scim2-models once (1.1 ms a body: a tenth of a leaver wave's SCIM work); each
    caller gets its own copy."""
    return copy.deepcopy(_deactivation_patch(enterprise))


@functools.cache
def _deactivation_patch(enterprise: bool) -> dict[str, Any]:
    return user_patch({"active": False}, enterprise=enterprise, manager_ref=None)


def user_patch(changes: Mapping[str, str | bool], *, enterprise: bool, manager_ref: str | None,
               shape: Shape = Shape()) -> dict[str, Any]:
    """PATCH replace/remove per changed attribute (RFC 7644 §3.5.2). `changes` holds jml keys
    plus `username` and `active`; an empty value removes the attribute. {} if none of the
    changes has a SCIM attribute to go to."""
    cls = FullUser if enterprise else User
    ops: list[tuple[str, str, Any]] = []

    def put(path: str, value: Any) -> None:
        ops.append(("remove", path, None) if value in ("", None) else ("replace", path, value))

    for key, value in changes.items():
        if key in shape.omit:
            continue
        if key == "username":
            put("userName", value)
        elif key == "external_id":
            put("externalId", value)
        elif key == "active":
            put("active", bool(value))
        elif key in CORE_PATHS:
            put(CORE_PATHS[key], value)
        elif key == "email":
            plain = [{"value": value}] if shape.email_plain else [{"value": value, "type": "work", "primary": True}]
            put("emails", plain if value else None)
        elif key in ("location", "country"):
            continue  # handled together below: one work address
        elif enterprise and key in ENTERPRISE_KEYS:
            put(f"{ENTERPRISE}:{ENTERPRISE_KEYS[key]}", value)
        elif enterprise and key == "manager_id":
            put(f"{ENTERPRISE}:manager", {"value": manager_ref} if manager_ref else None)
    if "location" in changes or "country" in changes:
        addr = {"type": "work", "primary": True, "locality": changes.get("location") or None,
                "country": changes.get("country") or None}
        put("addresses", [{k: v for k, v in addr.items() if v is not None}])
    if not ops:
        return {}  # nothing this mapping can express: no PATCH (a PatchOp needs one operation)
    return _checked_patch(cls, ops)


# Operations scim2-models has checked once and dumped exactly as given ({"op", "path"[, "value"]}),
# by (User model, op, path, value type): a text or flag at a path is checked by its path and type,
# not its content (every value type kept here is a plain str or bool), so another person's title
# at the same path needs no new check. The check cost 0.3 ms an update (bench/bench_apply.py).
_PLAIN_OPS: set[tuple[type[Any], str, str, type[Any]]] = set()
_PATCH_HEAD: dict[type[Any], dict[str, Any]] = {}  # a PatchOp's keys before "Operations", as dumped


def _plain_op(op: str, path: str, value: Any) -> dict[str, Any]:
    return {"op": op, "path": path} if value is None else {"op": op, "path": path, "value": value}


def _checked_patch(cls: type[Any], ops: list[tuple[str, str, Any]], kinds: list[str] | None = None) -> dict[str, Any]:
    """The PatchOp body: built and checked by scim2-models unless every operation is of a kind
    it has already checked and left as given. `kinds`: each operation's path as a kind, where
    the path itself varies (a member's id in a filter) but its check does not."""
    paths = kinds or [path for _, path, _ in ops]
    head = _PATCH_HEAD.get(cls)
    if head is not None and all((cls, op, k, type(v)) in _PLAIN_OPS for (op, _, v), k in zip(ops, paths, strict=True)):
        return {**copy.deepcopy(head), "Operations": [_plain_op(*o) for o in ops]}
    op_model, operation = _patch_models(cls)  # type: ignore[arg-type]
    models = [operation(op=op, path=path) if v is None else operation(op=op, path=path, value=v) for op, path, v in ops]
    body = dict(op_model(operations=models).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST))
    dumped = body.get("Operations")
    if list(body)[-1:] == ["Operations"] and isinstance(dumped, list) and len(dumped) == len(ops):
        _PATCH_HEAD.setdefault(cls, copy.deepcopy({k: v for k, v in body.items() if k != "Operations"}))
        for (op, path, v), kind, out in zip(ops, paths, dumped, strict=True):
            plain = _plain_op(op, path, v)
            if type(v) in (str, bool, type(None)) and list(out.items()) == list(plain.items()) \
                    and type(out.get("value")) is type(v):
                _PLAIN_OPS.add((cls, op, kind, type(v)))
    return body


def add_members_patch(member_ids: Iterable[str], ref_base: str | None = None) -> dict[str, Any]:
    op_model, operation = _patch_models(Group)
    op = operation(op="add", path="members", value=member_values(member_ids, ref_base))
    return dict(op_model(operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST))


def remove_members_filtered(member_ids: Iterable[str]) -> dict[str, Any]:
    """RFC 7644 §3.5.2.2: remove with a value filter in the path, one op per member."""
    ids = list(member_ids)
    ops = [("remove", f"members[{eq_filter('value', m)}]", None) for m in ids]
    # A plain id's filter (UUIDs, numbers, addresses) is checked once for them all (3.6 ms a
    # five-member PATCH otherwise); any other id's, as itself.
    kinds = [_MEMBER_FILTER if _PLAIN_ID.fullmatch(m) else path for m, (_, path, _) in zip(ids, ops, strict=True)]
    return _checked_patch(Group, ops, kinds)


_MEMBER_FILTER = 'members[value eq "…"]'
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:@+-]+")


def remove_members_by_value(member_ids: Iterable[str], ref_base: str | None = None) -> dict[str, Any]:
    """The Azure AD / GitHub EMU form: `path: members` plus a value list (no filter)."""
    op_model, operation = _patch_models(Group)
    op = operation(op="remove", path="members", value=member_values(member_ids, ref_base))
    return dict(op_model(operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST))


def replace_members_patch(members: Iterable[str], ref_base: str | None = None) -> dict[str, Any]:
    """PATCH replace of the whole member list (servers that remove members no other way)."""
    op_model, operation = _patch_models(Group)
    op = operation(op="replace", path="members", value=member_values(sorted(members), ref_base))
    return dict(op_model(operations=[op]).model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST))
