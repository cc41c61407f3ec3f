"""Validate HTTP requests against GitHub's official REST API description.

The description ships in the npm package `@octokit/openapi` (`generated/ghec.json`, the
GitHub Enterprise Cloud flavour, which is the only one carrying the EMU SCIM paths). It
is 14 MB; building an openapi-core validator over all of it takes seconds, so we cut out
the operations the GitHub connector may touch (plus every component they reference,
transitively) and build the validator over that slice once per session.

A request that the description does not allow — unknown path or method, a missing or
mistyped parameter, a body the schema rejects — yields a readable error string.

ERRATA (kept as small as possible, each justified by the description itself):
  * `components/schemas/patch-schema` declares `Operations[].value` as a string, yet the
    same operations' own examples send `"value": false` (the documented way to suspend an
    EMU user: "disableUser") and `"value": [{"value": "<id>"}]` (group "addMembers").
    The schema contradicts its examples, and the examples are what GitHub accepts, so we
    widen `value` to any JSON value. `test_github.py` proves the unpatched schema rejects
    the description's own examples — i.e. that this errata is needed, and no wider.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("JML_OCTOKIT_CACHE", REPO / ".cache" / "octokit"))
PACKAGE = "@octokit/openapi"
HOST = "http://github.test"

# Every operation the GitHub connector may send, as (METHOD, path template).
USED_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("get", "/user"),
    ("get", "/users/{username}"),
    ("get", "/rate_limit"),
    ("get", "/orgs/{org}"),
    ("get", "/orgs/{org}/members"),
    ("get", "/orgs/{org}/invitations"),
    ("delete", "/orgs/{org}/invitations/{invitation_id}"),
    ("get", "/orgs/{org}/memberships/{username}"),
    ("put", "/orgs/{org}/memberships/{username}"),
    ("delete", "/orgs/{org}/memberships/{username}"),
    ("get", "/orgs/{org}/teams"),
    ("post", "/orgs/{org}/teams"),
    ("get", "/orgs/{org}/teams/{team_slug}"),
    ("get", "/orgs/{org}/teams/{team_slug}/members"),
    ("get", "/orgs/{org}/teams/{team_slug}/memberships/{username}"),
    ("put", "/orgs/{org}/teams/{team_slug}/memberships/{username}"),
    ("delete", "/orgs/{org}/teams/{team_slug}/memberships/{username}"),
    ("get", "/scim/v2/enterprises/{enterprise}/Users"),
    ("post", "/scim/v2/enterprises/{enterprise}/Users"),
    ("get", "/scim/v2/enterprises/{enterprise}/Users/{scim_user_id}"),
    ("put", "/scim/v2/enterprises/{enterprise}/Users/{scim_user_id}"),
    ("patch", "/scim/v2/enterprises/{enterprise}/Users/{scim_user_id}"),
    ("delete", "/scim/v2/enterprises/{enterprise}/Users/{scim_user_id}"),
    ("get", "/scim/v2/enterprises/{enterprise}/Groups"),
    ("post", "/scim/v2/enterprises/{enterprise}/Groups"),
    ("get", "/scim/v2/enterprises/{enterprise}/Groups/{scim_group_id}"),
    ("patch", "/scim/v2/enterprises/{enterprise}/Groups/{scim_group_id}"),
    ("delete", "/scim/v2/enterprises/{enterprise}/Groups/{scim_group_id}"),
)


class DescriptionMissing(RuntimeError):
    """npm is not available and the description is not cached."""


def ensure_description() -> Path:
    """Path of generated/ghec.json, installing the npm package into .cache/ if needed."""
    target = CACHE / "node_modules" / "@octokit" / "openapi" / "generated" / "ghec.json"
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise DescriptionMissing(
            f"npm not found: cannot install {PACKAGE} (GitHub's REST API description) into {CACHE}; "
            f"install Node.js/npm or run `npm install --prefix {CACHE} {PACKAGE}` elsewhere and copy it here"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--silent", PACKAGE],
                   check=True, timeout=300)
    if not target.exists():
        raise DescriptionMissing(f"{PACKAGE} installed but {target} is missing")
    return target


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def slice_description(full: Mapping[str, Any], operations: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A self-contained description holding only `operations` and what they reference."""
    paths: dict[str, Any] = {}
    for method, path in operations:
        item = full["paths"][path]
        paths.setdefault(path, {k: v for k, v in item.items() if k == "parameters"})[method] = item[method]
    components: dict[str, dict[str, Any]] = {}
    pending = list(_refs(paths))
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen or not ref.startswith("#/components/"):
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = full["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        pending.extend(_refs(node))
    return {
        "openapi": full["openapi"],
        "info": full["info"],
        "servers": [{"url": HOST}],
        "paths": paths,
        "components": components,
    }


def apply_errata(spec: dict[str, Any]) -> dict[str, Any]:
    """See ERRATA in the module docstring."""
    patched = copy.deepcopy(spec)
    value = patched["components"]["schemas"]["patch-schema"]["properties"]["Operations"]["items"]["properties"]
    value["value"] = {"description": value["value"].get("description", ""),
                      "nullable": True}  # any JSON value, as the description's own examples send
    return patched


@cache
def load_slice(errata: bool = True) -> dict[str, Any]:
    with ensure_description().open("rb") as fh:
        full = json.load(fh)
    spec = slice_description(full, USED_OPERATIONS)
    return apply_errata(spec) if errata else spec


@cache
def full_examples() -> dict[str, Any]:
    """The description's own request examples for the PATCH operations (for the errata test)."""
    spec = load_slice(errata=False)
    out: dict[str, Any] = {}
    for path in ("/scim/v2/enterprises/{enterprise}/Users/{scim_user_id}",
                 "/scim/v2/enterprises/{enterprise}/Groups/{scim_group_id}"):
        examples = spec["paths"][path]["patch"]["requestBody"]["content"]["application/json"]["examples"]
        for name, ex in examples.items():
            out[name] = ex["value"]
    return out


@dataclass
class Request:
    """The openapi-core request protocol, from plain values."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    host_url: str = HOST
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        self.method = self.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(self.query, keep_blank_values=True)),
            header=Headers(list(self.headers.items())),
            cookie=ImmutableMultiDict(),
        )


class GithubDescription:
    """openapi-core over the slice; `errors(request)` → [] when the request is allowed."""

    def __init__(self, errata: bool = True) -> None:
        self.spec = load_slice(errata)
        self._openapi = OpenAPI.from_dict(self.spec)

    def errors(self, request: Request) -> list[str]:
        try:
            self._openapi.validate_request(request)
        except Exception as exc:  # openapi-core raises a family of validation errors
            return [_describe(exc)]
        return []


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause: BaseException | None = exc.__cause__ or exc.__context__
    while cause is not None and len(parts) < 4:
        extra = getattr(cause, "schema_errors", None)
        detail = "; ".join(str(e.message) for e in extra) if extra else str(cause)
        parts.append(f"{type(cause).__name__}: {detail}")
        cause = cause.__cause__
    return " <- ".join(parts)


@cache
def description() -> GithubDescription:
    """One validator per test session."""
    return GithubDescription()
