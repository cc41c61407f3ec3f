"""GET /api/openapi.json: every route `jml serve` answers, with request schemas and security.

Written as data so the schemas sit beside one another; tests validate it with
openapi-spec-validator and the service is fuzzed against it with schemathesis, so a limit
stated here (required, maxLength, pattern) is one the handlers enforce.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# Text a person types: at least one non-space character and no control characters (newlines
# are allowed where `multiline`). The handlers apply the same rule (jml.web.state.text_field).
_CTL = "\\u0000-\\u001f\\u007f"
_CTL_ML = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f"
LINE = f"^[^{_CTL}]*[^\\s{_CTL}][^{_CTL}]*$"
MULTILINE = f"^[^{_CTL_ML}]*[^\\s{_CTL}][^{_CTL_ML}]*$"
ID = f"^[^\\s{_CTL}/]([^{_CTL}/]*[^\\s{_CTL}/])?$"

HTML = {"text/html": {"schema": {"type": "string"}}}
TEXT = {"text/plain": {"schema": {"type": "string"}}}
ANY_JSON: dict[str, Any] = {"application/json": {"schema": {}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema)}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": HTML}


REDIRECT = {"description": "Redirect (to /login when not signed in, or to the next page after a form)",
            "headers": {"Location": {"schema": {"type": "string"}}}}
SIGNED_IN: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"sessionCookie": []}]
OPEN: list[dict[str, list[str]]] = []
CSRF_HEADER = {"name": "X-CSRF-Token", "in": "header", "required": False,
               "description": "The session's CSRF token: required when authenticated by the session cookie "
                              "(not with a bearer token).",
               "schema": {"type": "string", "maxLength": 256}}
CSRF_FIELD = {"type": "string", "maxLength": 256,
              "description": "The session's CSRF token (from the page's form); required with the session cookie"}


def _id_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID}}


def _form(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _ref(schema)}}}


def _webhook_responses() -> dict[str, Any]:
    return {
        "200": {"description": "Accepted (stored before the answer; processed after it) or a duplicate",
                "content": ANY_JSON | TEXT},
        "202": {"description": "Accepted", "content": ANY_JSON | TEXT},
        "400": {"description": "Malformed request", "content": ANY_JSON | TEXT},
        "401": {"description": "Missing or wrong credentials", "content": ANY_JSON | TEXT},
        "403": {"description": "Signature or authorization refused", "content": ANY_JSON | TEXT},
        "404": {"description": "This webhook source is not configured", "content": ANY_JSON | TEXT},
        "409": {"description": "Conflict", "content": ANY_JSON | TEXT},
        "413": {"description": "Body too large", "content": ANY_JSON | TEXT},
        "415": {"description": "Not JSON", "content": ANY_JSON | TEXT},
        "429": {"description": "Rate limited", "content": ANY_JSON | TEXT},
        "503": {"description": "Not ready (store unavailable or stopping)", "content": ANY_JSON | TEXT},
    }


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": "string", "nullable": True}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "OffboardRequest": {
            "type": "object", "additionalProperties": False, "required": ["employee_id", "reason"],
            "properties": {
                "employee_id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": LINE},
                "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": MULTILINE,
                           "description": "Why; kept in the audit trail"},
                "at": {"type": "string", "format": "date-time",
                       "description": "Effective time (RFC 3339); default now. A future time schedules the leaver."},
                "undo": {"type": "boolean", "default": False, "description": "Lift an earlier offboard"},
            },
        },
        "OffboardResult": {
            "type": "object", "required": ["employee_id", "undo", "progress"],
            "properties": {"employee_id": {"type": "string"}, "undo": {"type": "boolean"},
                           "progress": {"type": "string", "description": "URL of the progress document"},
                           "effective_at": {"type": "string", "nullable": True},
                           "changed": {"type": "boolean", "description": "False: undo with nothing to lift"},
                           "held": {"type": "boolean", "description": "The guard held the leaver's plan"},
                           "plan_ids": {"type": "array", "items": {"type": "string"}},
                           "held_reasons": {"type": "array", "items": {"type": "string"}}},
        },
        "ApproveResult": {"type": "object", "required": ["plan_id", "state"],
                          "properties": {"plan_id": {"type": "string"},
                                         "state": {"type": "string", "enum": ["queued", "waiting", "discarded"]},
                                         "approvals": {"type": "integer"}, "required": {"type": "integer"},
                                         "message": {"type": "string"}}},
        "RevertRequest": {"type": "object", "additionalProperties": False,
                          "description": "A preview unless `dry_run` is false (an empty body previews too)",
                          "properties": {"dry_run": {"type": "boolean", "default": True}}},
        "RevertResult": {
            "type": "object", "required": ["reverts", "plan_id", "state", "operations", "guard"],
            "properties": {
                "reverts": {"type": "string"}, "origin": {"type": "string"},
                "plan_id": {"type": "string", "nullable": True, "description": "The revert's plan (null: preview)"},
                "state": {"type": "string", "enum": ["preview", "held", "queued", "done"]},
                "dry_run": {"type": "boolean"}, "operations": {"type": "array", "items": {"type": "object"}},
                "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
                "guard": {"type": "object"},
                "refused": {"type": "array", "items": {"type": "object"},
                            "description": "People HR still has as leavers: not restored"},
                "cannot_restore": {"type": "array", "items": {"type": "object"}},
                "restored_differently": {"type": "array", "items": {"type": "object"},
                                         "description": "e.g. a GitHub org membership comes back as an invitation"},
                "people_state_restored": {"type": "array", "items": {"type": "string"}},
                "warnings": {"type": "array", "items": {"type": "string"}}}},
        "RetryRequest": {"type": "object", "additionalProperties": False,
                         "description": "One dead-lettered operation (`operation_id`) or all of them (`all: true`)",
                         "properties": {"operation_id": {"type": "integer", "minimum": 1},
                                        "all": {"type": "boolean"}}},
        "RetryResult": {"type": "object", "required": ["requeued"], "properties": {"requeued": {"type": "integer"}}},
        "PauseResult": {"type": "object", "required": ["connector", "paused"],
                        "properties": {"connector": {"type": "string"}, "paused": {"type": "boolean"},
                                       "paused_connectors": {"type": "array", "items": {"type": "string"}}}},
        "RetryForm": {"type": "object", "properties": {
            "operation_id": {"type": "string", "pattern": "^[0-9]{1,17}$", "description": "Absent: all"},
            "csrf_token": CSRF_FIELD}},
        "Status": {
            "type": "object",
            "required": ["now", "connectors", "paused", "held_plans", "dead_letters", "leavers_in_flight", "source"],
            "properties": {
                "now": {"type": "string", "format": "date-time"},
                "connectors": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {k: {"type": "integer"} for k in
                                                     ("pending", "running", "dead", "held")}}},
                "paused": {"type": "array", "items": {"type": "string"}},
                "held_plans": {"type": "array", "items": {"type": "object", "properties": {
                    "plan_id": {"type": "string"}, "created_at": nullable_str,
                    "reasons": {"type": "array", "items": {"type": "string"}},
                    "summary": {"type": "object", "additionalProperties": {"type": "integer"}}}}},
                "dead_letters": {"type": "array", "items": {"type": "object", "properties": {
                    "operation_id": {"type": "integer"}, "plan_id": {"type": "string"},
                    "connector": {"type": "string"}, "action": {"type": "string"}, "person": {"type": "string"},
                    "error": nullable_str, "attempts": {"type": "integer"}, "at": nullable_str}}},
                "leavers_in_flight": {"type": "array", "items": {"type": "object"}},
                "source": {"type": "object", "properties": {
                    "last_read": nullable_str, "last_status": nullable_str, "last_reason": nullable_str,
                    "last_success": nullable_str, "rows": {"type": "integer", "nullable": True},
                    "stale": {"type": "boolean"},
                    "error": {"type": "string", "description": "the last failed read, until one succeeds"},
                    "error_at": nullable_str,
                    "state": {"type": "string", "enum": ["fresh", "stale", "rejected", "none"]}}},
                "timezone": {"type": "string", "description": "The display zone (server.timezone, default HR's)"},
                "set_aside": {"type": "object", "description": "HR rows of the latest export set aside (quarantined)",
                              "properties": {"file": nullable_str, "count": {"type": "integer"},
                                             "rows": {"type": "array", "items": {"type": "object"}}}},
                "attention": {"type": "array", "description": "What needs attention, most urgent first",
                              "items": {"type": "object", "properties": {
                                  "kind": {"type": "string"}, "severity": {"type": "string",
                                                                          "enum": ["breach", "warn", "info"]},
                                  "title": {"type": "string"}, "why": {"type": "string"},
                                  "todo": {"type": "string"}, "detail": {"type": "string"},
                                  "person": nullable_str,
                                  "actions": {"type": "array", "items": {"type": "string"}}}}},
            },
        },
        "Progress": {
            "type": "object", "required": ["employee_id", "now", "leaver", "connectors", "all_verified"],
            "properties": {
                "employee_id": {"type": "string"}, "now": {"type": "string", "format": "date-time"},
                "leaver": {"type": "boolean"}, "phase": nullable_str, "effective_termination": nullable_str,
                "all_verified": {"type": "boolean"},
                "connectors": {"type": "array", "items": {
                    "type": "object",
                    "required": ["connector", "pending", "done", "verified", "deadline", "seconds_left", "state"],
                    "properties": {
                        "connector": {"type": "string"}, "account": nullable_str,
                        "pending": {"type": "integer"}, "held": {"type": "integer"}, "done": {"type": "integer"},
                        "dead": {"type": "integer"}, "verified": {"type": "boolean"},
                        "verified_at": nullable_str, "started_at": nullable_str, "deadline": nullable_str,
                        "seconds_left": {"type": "number", "nullable": True}, "breached": {"type": "boolean"},
                        "state": {"type": "string",
                                  "enum": ["verified", "breached", "in_progress", "not_leaving"]}}}},
            },
        },
        "LoginForm": {
            "type": "object", "required": ["token", "csrf_token"],
            "properties": {
                "token": {"type": "string", "maxLength": 4096, "description": "The admin token"},
                "csrf_token": {"type": "string", "maxLength": 256,
                               "description": "Must equal the jml_login cookie set by GET /login"},
                "next": {"type": "string", "maxLength": 2048, "description": "Local path to go to afterwards"},
            },
        },
        "CsrfForm": {"type": "object", "properties": {"csrf_token": CSRF_FIELD}},
        "OffboardForm": {
            "type": "object", "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": MULTILINE},
                "confirm": {"type": "string", "enum": ["yes"],
                            "description": "Absent: answer a confirmation page. `yes`: offboard."},
                "undo": {"type": "string", "enum": ["yes"], "description": "Lift an earlier offboard"},
                "csrf_token": CSRF_FIELD,
            },
        },
        "HrEvent": {
            "type": "object", "required": ["id", "type", "occurred_at", "person"],
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 200},
                "type": {"type": "string", "enum": ["hire", "change", "termination"]},
                "occurred_at": {"type": "string", "format": "date-time"},
                "person": {"type": "object", "description": "Export columns, as in the HR export",
                           "additionalProperties": {"type": "string", "nullable": True}},
            },
        },
        "OktaEventHook": {
            "type": "object", "required": ["data"],
            "properties": {
                "eventType": {"type": "string"}, "eventTypeVersion": {"type": "string"},
                "cloudEventsVersion": {"type": "string"}, "source": {"type": "string"},
                "eventId": {"type": "string"}, "eventTime": {"type": "string"},
                "contentType": {"type": "string"},
                "data": {"type": "object", "required": ["events"], "properties": {"events": {
                    "type": "array", "maxItems": 1000, "items": {
                        "type": "object", "required": ["uuid", "eventType"],
                        "properties": {
                            "uuid": {"type": "string", "minLength": 1, "maxLength": 200},
                            "eventType": {"type": "string", "maxLength": 200},
                            "published": {"type": "string"},
                            "actor": {"type": "object"},
                            "target": {"type": "array", "items": {"type": "object"}},
                            "outcome": {"type": "object"}}}}}},
            },
        },
    }


ROLE_NOTE = " Needs the right `{right}` (roles: {roles})."
FORBIDDEN = "Signed in, but the role does not allow it"


def _roles_for(right: str) -> str:
    from jml.web.roles import RIGHTS

    return ", ".join(r for r, rights in RIGHTS.items() if right in rights)


def _api_post(summary: str, right: str, params: list[dict[str, Any]], ok: dict[str, Any],
              body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary + ROLE_NOTE.format(right=right, roles=_roles_for(right)), "security": SIGNED_IN,
        "tags": ["api"], "parameters": [*params, CSRF_HEADER],
        "responses": {**ok, "400": _err("Malformed request"), "401": _err("Not signed in"),
                      "403": _err(FORBIDDEN + ", or a cookie session without CSRF token"),
                      "404": _err("Not found"), "409": _err("Conflict"), "413": {"description": "Body too large"},
                      "429": _err("Too many failed sign-ins from this client")}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return {"post": op}


def _revert_api(applied: dict[str, Any]) -> dict[str, Any]:
    out = _api_post("Revert an applied plan: a preview (200) unless `dry_run` is false, then its inverse is "
                    "planned through the guard (202; `state` held or queued).", "operate", [applied],
                    {"200": {"description": "Preview", "content": _json("RevertResult")},
                     "202": {"description": "Planned", "content": _json("RevertResult")}})
    out["post"]["requestBody"] = {"required": False, "content": _json("RevertRequest")}
    out["post"]["responses"]["409"] = _err("Not applied, still pushing, or already reverted")
    return out


def _form_post(summary: str, right: str, params: list[dict[str, Any]], form: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary + ROLE_NOTE.format(right=right, roles=_roles_for(right)), "security": SIGNED_IN,
        "tags": ["pages"], "parameters": params, "requestBody": _form(form),
        "responses": {"303": REDIRECT, "400": _page("Malformed form"),
                      "403": _page(FORBIDDEN + ", cross-site, or missing CSRF token"), "404": _page("Not found"),
                      "409": _page("Conflict"), "413": {"description": "Body too large"}}}}


def _extra_paths() -> dict[str, Any]:
    connector = {"name": "connector", "in": "path", "required": True, "description": "Connector name",
                 "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID}}
    plan = _id_param("plan_id", "Held plan id, or a layoff pre-approval (pa-…)")
    since = {"name": "since", "in": "query", "required": False, "description": "ISO 8601 date or date-time",
             "schema": {"type": "string", "maxLength": 64}}
    pause_ok = {"200": {"description": "Done", "content": _json("PauseResult")}}
    applied = _id_param("plan_id", "An applied plan's id")
    return {
        "/auth/callback": {"get": {
            "summary": "OIDC redirect back from the identity provider (code, state): opens a session",
            "security": OPEN, "tags": ["pages"],
            "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string",
                                                                                    "maxLength": 2048}}
                           for n in ("code", "state", "error")],
            "responses": {"200": _page("Signed in: continues to the page asked for"),
                          "400": _page("Expired, replayed or foreign sign-in"),
                          "403": _page("Refused by the IdP, an invalid ID token, or no role"),
                          "404": _page("Single sign-on not configured"), "429": _page("Too many failures")}}},
        "/plans/{plan_id}/discard": _form_post("Discard a held plan or pre-approval (form).", "operate", [plan],
                                               "CsrfForm"),
        "/retry": _form_post("Re-queue a dead-lettered operation, or all (form).", "operate", [], "RetryForm"),
        "/operations/{operation_id}/discard": _form_post(
            "Discard one dead-lettered operation: it is not retried (form).", "operate",
            [_id_param("operation_id", "A dead letter's operation id")], "CsrfForm"),
        "/connectors/{connector}/pause": _form_post("Pause a connector (form).", "operate", [connector],
                                                    "CsrfForm"),
        "/connectors/{connector}/resume": _form_post("Resume a connector (form).", "operate", [connector],
                                                     "CsrfForm"),
        "/audit": {"get": {"summary": "Audit downloads." + ROLE_NOTE.format(right="audit",
                                                                            roles=_roles_for("audit")),
                           "security": SIGNED_IN, "tags": ["pages"],
                           "responses": {"200": _page("Links to the audit export and access report"),
                                         "303": REDIRECT, "403": _page(FORBIDDEN)}}},
        "/api/v1/plans/{plan_id}/discard": _api_post("Discard a held plan or pre-approval.", "operate", [plan],
                                                     {"200": {"description": "Discarded",
                                                              "content": _json("ApproveResult")}}),
        "/plans/{plan_id}/revert": {
            "get": {"summary": "Preview the revert of an applied plan, with its button (nothing changes)."
                               + ROLE_NOTE.format(right="operate", roles=_roles_for("operate")),
                    "security": SIGNED_IN, "tags": ["pages"], "parameters": [applied],
                    "responses": {"200": _page("The preview"), "303": REDIRECT, "404": _page("No such plan"),
                                  "409": _page("Not applied, still pushing, or already reverted")}},
            **_form_post("Revert an applied plan: plans its inverse through the guard (form).", "operate",
                         [applied], "CsrfForm")},
        "/api/v1/plans/{plan_id}/revert": _revert_api(applied),
        "/api/v1/retry": _api_post("Re-queue dead-lettered operations.", "operate", [],
                                   {"200": {"description": "Re-queued", "content": _json("RetryResult")}},
                                   body="RetryRequest"),
        "/api/v1/connectors/{connector}/pause": _api_post("Pause a connector (its work waits).", "operate",
                                                          [connector], pause_ok),
        "/api/v1/connectors/{connector}/resume": _api_post("Resume a paused connector.", "operate", [connector],
                                                           pause_ok),
        "/api/v1/audit": {"get": {
            "summary": "The audit trail as JSON lines, then its head (as `jml audit export`)."
                       + ROLE_NOTE.format(right="audit", roles=_roles_for("audit")),
            "security": SIGNED_IN, "tags": ["api"], "parameters": [since],
            "responses": {"200": {"description": "JSON lines", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}}}},
                "400": _err("Malformed or out-of-range time"), "401": _err("Not signed in"),
                "403": _err(FORBIDDEN)}}},
        "/api/v1/reports/access": {"get": {
            "summary": "Who has what in every connector and which rule grants it (as `jml report access`)."
                       + ROLE_NOTE.format(right="audit", roles=_roles_for("audit")),
            "security": SIGNED_IN, "tags": ["api"],
            "parameters": [{"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "csv"]}},
                           {**since, "name": "changes_since"}],
            "responses": {"200": {"description": "The report", "content": {
                "application/json": {"schema": {}}, "text/csv": {"schema": {"type": "string"}}}},
                "400": _err("Malformed request"), "401": _err("Not signed in"), "403": _err(FORBIDDEN)}}},
        "/api/v1/reports/sla": {"get": {
            "summary": "A month's deprovisions per leaver and connector, with the cause of each breach (as "
                       "`jml report sla`)." + ROLE_NOTE.format(right="audit", roles=_roles_for("audit")),
            "security": SIGNED_IN, "tags": ["api"],
            "parameters": [{"name": "month", "in": "query", "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}},
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "csv"]}}],
            "responses": {"200": {"description": "The report", "content": {
                "application/json": {"schema": {}}, "text/csv": {"schema": {"type": "string"}}}},
                "400": _err("Malformed request"), "401": _err("Not signed in"), "403": _err(FORBIDDEN)}}},
    }


def _review_paths() -> dict[str, Any]:
    """Access review campaigns (issue 18; jml/web/reviews.py)."""
    campaign = {"name": "campaign_id", "in": "path", "required": True, "description": "A review campaign's number",
                "schema": {"type": "integer", "minimum": 1}}
    review = ROLE_NOTE.format(right="review", roles=_roles_for("review"))
    audit = ROLE_NOTE.format(right="audit", roles=_roles_for("audit"))
    any_json = {"application/json": {"schema": {"type": "object"}}}
    start = _api_post("Start a campaign: {\"by\": \"app\"|\"manager\", \"connector\"?, \"due\"? (e.g. 14d), "
                      "\"name\"?}; one item per account and entitlement, each with why and a reviewer.", "audit",
                      [], {"201": {"description": "Started", "content": any_json}})
    start["post"]["requestBody"] = {"required": True, "content": any_json}
    decide = _api_post("Keep or revoke items: {\"items\": [ids], \"decision\": \"keep\"|\"revoke\", "
                       "\"reason\"?}. Only the assigned reviewer or an admin, never the person under review; a "
                       "revocation is pushed at once and read back from the app.", "review", [campaign],
                       {"200": {"description": "Decided (kept)", "content": any_json},
                        "202": {"description": "Decided; revocations queued", "content": any_json}})
    decide["post"]["requestBody"] = {"required": True, "content": any_json}
    return {
        "/reviews": {"get": {"summary": "Access review campaigns and your progress." + review,
                             "security": SIGNED_IN, "tags": ["pages"],
                             "responses": {"200": _page("Campaigns"), "303": REDIRECT}}},
        "/reviews/{campaign_id}": {"get": {
            "summary": "A campaign's items assigned to you (all for admin and audit), with why and keep/revoke."
                       + review, "security": SIGNED_IN, "tags": ["pages"], "parameters": [campaign],
            "responses": {"200": _page("Items"), "303": REDIRECT, "400": _page("Malformed id"),
                          "404": _page("No such campaign")}}},
        "/reviews/{campaign_id}/decide": _form_post("Keep or revoke one item (form: item, decision, reason).",
                                                    "review", [campaign], "CsrfForm"),
        "/api/v1/reviews": {"get": {"summary": "The campaigns and their progress." + review, "security": SIGNED_IN,
                                    "tags": ["api"], "responses": {"200": {"description": "Campaigns",
                                                                           "content": any_json},
                                                                   "401": _err("Not signed in")}},
                            **start},
        "/api/v1/reviews/{campaign_id}": {"get": {
            "summary": "A campaign's items assigned to you (all for admin and audit) and progress." + review,
            "security": SIGNED_IN, "tags": ["api"], "parameters": [campaign],
            "responses": {"200": {"description": "Items", "content": any_json}, "400": _err("Malformed id"),
                          "401": _err("Not signed in"), "404": _err("No such campaign")}}},
        "/api/v1/reviews/{campaign_id}/decisions": decide,
        "/api/v1/reviews/{campaign_id}/export": {"get": {
            "summary": "Evidence: every item with reviewer, decision, time and the audit record (seq, hash) of "
                       "the decision (as `jml review export`)." + audit,
            "security": SIGNED_IN, "tags": ["api"],
            "parameters": [campaign, {"name": "format", "in": "query", "required": False,
                                      "schema": {"type": "string", "enum": ["json", "csv"]}}],
            "responses": {"200": {"description": "The evidence", "content": {
                "application/json": {"schema": {}}, "text/csv": {"schema": {"type": "string"}}}},
                "400": _err("Malformed request"), "401": _err("Not signed in"), "404": _err("No such campaign")}}},
    }


def _access_paths() -> dict[str, Any]:
    """Access requests and the catalogue (issue 18; jml/web/access.py)."""
    view = ROLE_NOTE.format(right="view", roles=_roles_for("view"))
    policy = (" Any signed-in person: the approval policy decides (for yourself, your reports, or with the "
              "`request` right; approved by the manager, the owner or the `approve` right; never by the "
              "requester or the person who gets it) and answers 403 with its reason.")
    any_json = {"application/json": {"schema": {"type": "object"}}}
    text = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": LINE}
    reason = {"type": "string", "minLength": 1, "maxLength": 500, "pattern": LINE}
    duration = {"oneOf": [{"type": "string", "maxLength": 32,
                           "pattern": "^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d|w)?\\s*$"},
                          {"type": "number", "minimum": 0, "exclusiveMinimum": True}]}
    create = _api_post("Request an entitlement for a person, with a reason and a duration (at most the "
                       "entitlement's maximum)." + policy, "view", [],
                       {"201": {"description": "Requested (pending)", "content": any_json}})
    create["post"]["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "required": ["employee_id", "connector", "grant", "reason"],
        "properties": {"employee_id": {**text, "maxLength": 128}, "connector": text, "grant": text,
                       "reason": reason, "duration": duration}}}}}
    rid = _id_param("request_id", "An access request's id (ar-… or jit-…)")
    decide_body = {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": {"reason": {**reason, "minLength": 0}}}}}}

    def decision(summary: str) -> dict[str, Any]:
        out = _api_post(summary + policy, "view", [rid], {"200": {"description": "Done", "content": any_json}})
        out["post"]["requestBody"] = decide_body
        return out

    approve = decision("Approve a pending request; the last approval needed grants it and plans the person at once.")
    approve["post"]["responses"]["202"] = {"description": "Counted; waiting for more approvals", "content": any_json}
    jit = _api_post("Break-glass: take access now, without approval, for the roles in access.jit.roles (audited, "
                    "alerted on: jml_access_jit_grants_total).", "view", [],
                    {"201": {"description": "Granted", "content": any_json}})
    jit["post"]["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "required": ["connector", "grant", "reason", "hours"],
        "properties": {"connector": text, "grant": text, "reason": reason,
                       "hours": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 8784},
                       "employee_id": {**text, "maxLength": 128}}}}}}
    return {
        "/api/v1/catalogue": {"get": {
            "summary": "Every entitlement: owner, risk, maximum duration, birthright, managed; `live=1` also lists "
                       "what each app holds." + view, "security": SIGNED_IN, "tags": ["api"],
            "parameters": [{"name": "live", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}}],
            "responses": {"200": {"description": "The catalogue", "content": any_json},
                          "401": _err("Not signed in")}}},
        "/api/v1/access/requests": {"get": {
            "summary": "Access requests you made, for you, or that you may decide (all with people, approve or "
                       "audit), newest first." + view, "security": SIGNED_IN, "tags": ["api"],
            "parameters": [{"name": "state", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["pending", "approved", "denied", "active",
                                                                  "expired", "revoked", "cancelled"]}},
                           {"name": "employee_id", "in": "query", "required": False,
                            "schema": {"type": "string", "maxLength": 128, "pattern": ID}}],
            "responses": {"200": {"description": "Requests", "content": any_json}, "400": _err("Malformed query"),
                          "401": _err("Not signed in")}},
            **create},
        "/api/v1/access/requests/{request_id}/approve": approve,
        "/api/v1/access/requests/{request_id}/deny": decision("Deny a pending request (its requester: withdraw it)."),
        "/api/v1/access/requests/{request_id}/revoke": decision(
            "End an active grant now (approver, operator, the owner or its holder); its removal is pushed and read "
            "back from the app."),
        "/api/v1/access/jit": jit,
        "/access": {"get": {"summary": "Request access; the requests you made, for you, or that you may decide, "
                                       "with Approve / Deny / Revoke." + view, "security": SIGNED_IN,
                            "tags": ["pages"],
                            "parameters": [{"name": "done", "in": "query", "required": False,
                                            "schema": {"type": "string", "maxLength": 500}}],
                            "responses": {"200": _page("The page"), "303": REDIRECT}}},
        "/access/request": _form_post("Request access (form: employee_id, connector, grant, reason, duration)."
                                      + policy, "view", [], "CsrfForm"),
        "/access/{request_id}/approve": _form_post("Approve a pending request." + policy, "view", [rid], "CsrfForm"),
        "/access/{request_id}/deny": _form_post("Deny a pending request." + policy, "view", [rid], "CsrfForm"),
        "/access/{request_id}/revoke": _form_post("End an active grant now." + policy, "view", [rid], "CsrfForm"),
    }


@cache
def document() -> dict[str, Any]:
    signed_page = {"security": SIGNED_IN, "tags": ["pages"]}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness: the process answers", "security": OPEN, "tags": ["ops"],
                             "responses": {"200": {"description": "Alive", "content": ANY_JSON | TEXT},
                                           "503": {"description": "Stopping", "content": ANY_JSON | TEXT}}}},
        "/readyz": {"get": {"summary": "Readiness: store reachable, workers running", "security": OPEN,
                            "tags": ["ops"],
                            "responses": {"200": {"description": "Ready", "content": ANY_JSON | TEXT},
                                          "503": {"description": "Not ready", "content": ANY_JSON | TEXT}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "security": OPEN,
                             "tags": ["ops"],
                             "responses": {"200": {"description": "Metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}},
                                 "application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
        "/api/openapi.json": {"get": {"summary": "This document", "security": OPEN, "tags": ["ops"],
                                      "responses": {"200": {"description": "OpenAPI 3 document",
                                                            "content": ANY_JSON}}}},
        "/webhooks/okta": {
            "get": {"summary": "Okta event hook one-time verification", "security": [{"oktaAuthorization": []}],
                    "tags": ["webhooks"],
                    "parameters": [{"name": "x-okta-verification-challenge", "in": "header", "required": True,
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 1024}}],
                    "responses": _webhook_responses()},
            "post": {"summary": "Okta event hook delivery (deduplicated by data.events[].uuid)",
                     "security": [{"oktaAuthorization": []}], "tags": ["webhooks"],
                     "requestBody": {"required": True, "content": _json("OktaEventHook")},
                     "responses": _webhook_responses()},
        },
        "/webhooks/hr": {
            "post": {"summary": "Signed HR event (hire, change, termination); idempotent by id",
                     "security": [{"hrSignature": []}], "tags": ["webhooks"],
                     "requestBody": {"required": True, "content": _json("HrEvent")},
                     "responses": _webhook_responses()},
        },
        "/login": {
            "get": {"summary": "Sign-in form (sets the jml_login double-submit cookie)", "security": OPEN,
                    "tags": ["pages"],
                    "parameters": [{"name": "next", "in": "query", "required": False,
                                    "schema": {"type": "string", "maxLength": 2048}}],
                    "responses": {"200": _page("The form"), "303": REDIRECT}},
            "post": {"summary": "Sign in with the admin token: opens a session (HttpOnly, SameSite=Strict cookie)",
                     "security": OPEN, "tags": ["pages"], "requestBody": _form("LoginForm"),
                     "responses": {"303": REDIRECT, "400": _page("Malformed form"), "401": _page("Wrong token"),
                                   "403": _page("Cross-site or expired form"),
                                   "413": {"description": "Body too large"},
                                   "429": _page("Too many failed attempts"),
                                   "503": _page("No admin token configured")}},
        },
        "/logout": {"post": {"summary": "Close the session", "security": OPEN, "tags": ["pages"],
                             "requestBody": _form("CsrfForm"),
                             "responses": {"303": REDIRECT, "400": _page("Malformed form"),
                                           "403": _page("Cross-site or expired form"),
                                           "413": {"description": "Body too large"}}}},
        "/": {"get": {**signed_page, "summary": "Status page: leavers in flight with their SLA countdown, breaches, "
                                                "held plans, dead letters, source freshness, duration plot",
                      "parameters": [{"name": "approved", "in": "query", "required": False,
                                      "schema": {"type": "string", "maxLength": 128}}],
                      "responses": {"200": _page("The status page"), "303": REDIRECT}}},
        "/people": {"get": {**signed_page, "summary": "HR search by name, email or employee id",
                            "parameters": [{"name": "q", "in": "query", "required": False,
                                            "schema": {"type": "string", "maxLength": 200}}],
                            "responses": {"200": _page("Search form and results"), "303": REDIRECT,
                                          "400": _page("Malformed query")}}},
        "/people/{employee_id}": {"get": {
            **signed_page, "summary": "A person: their access in every connector and the rule granting it",
            "parameters": [_id_param("employee_id", "HR employee id"),
                           {"name": "done", "in": "query", "required": False,
                            "schema": {"type": "string", "maxLength": 32}}],
            "responses": {"200": _page("The person"), "303": REDIRECT, "404": _page("No such person")}}},
        "/people/{employee_id}/offboard": {"post": {
            **signed_page, "summary": "Offboard now (first answers a confirmation page; `confirm=yes` acts)",
            "parameters": [_id_param("employee_id", "HR employee id")],
            "requestBody": _form("OffboardForm"),
            "responses": {"200": _page("Confirmation step"), "303": REDIRECT, "400": _page("Malformed form"),
                          "403": _page("Cross-site or missing CSRF token"), "404": _page("No such person"),
                          "409": _page("Held by the guard"), "413": {"description": "Body too large"},
                          "503": _page("Offboarding unavailable")}}},
        "/plans/{plan_id}/approve": {"post": {
            **signed_page, "summary": "Approve a held plan (form)",
            "parameters": [_id_param("plan_id", "Held plan id")], "requestBody": _form("CsrfForm"),
            "responses": {"303": REDIRECT, "400": _page("Malformed form"),
                          "403": _page("Cross-site or missing CSRF token"), "404": _page("No such plan"),
                          "409": _page("Not held, or no longer current"),
                          "413": {"description": "Body too large"}}}},
        "/api/v1/status": {"get": {
            "summary": "The status document (as `jml status --json`)", "security": SIGNED_IN, "tags": ["api"],
            "responses": {"200": {"description": "Status", "content": _json("Status")},
                          "401": _err("Not signed in")}}},
        "/api/v1/offboard": {"post": {
            "summary": "Offboard a person now (or at `at`), or lift it with `undo`", "security": SIGNED_IN,
            "tags": ["api"], "parameters": [CSRF_HEADER],
            "requestBody": {"required": True, "content": _json("OffboardRequest")},
            "responses": {"202": {"description": "Recorded; deprovisioning is queued",
                                  "content": _json("OffboardResult")},
                          "400": _err("Malformed body"), "401": _err("Not signed in"),
                          "403": _err("Cookie session without CSRF token, or cross-site"),
                          "404": _err("No such person"), "409": _err("Held by the guard"),
                          "413": {"description": "Body too large"},
                          "503": _err("Offboarding unavailable")}}},
        "/api/v1/plans/{plan_id}/approve": {"post": {
            "summary": "Approve a held plan", "security": SIGNED_IN, "tags": ["api"],
            "parameters": [_id_param("plan_id", "Held plan id"), CSRF_HEADER],
            "responses": {"200": {"description": "Approved: queued", "content": _json("ApproveResult")},
                          "401": _err("Not signed in"), "403": _err("Cookie session without CSRF token"),
                          "404": _err("No such plan"), "409": _err("Not held, or no longer current")}}},
        "/api/v1/people/{employee_id}/progress": {"get": {
            "summary": "A leaver's deprovisioning per connector against the SLA", "security": SIGNED_IN,
            "tags": ["api"], "parameters": [_id_param("employee_id", "HR employee id")],
            "responses": {"200": {"description": "Progress", "content": _json("Progress")},
                          "401": _err("Not signed in"), "404": _err("No such person")}}},
        "/static/style.css": {"get": {"summary": "Stylesheet", "security": OPEN, "tags": ["pages"],
                                      "responses": {"200": {"description": "CSS", "content": {
                                          "text/css": {"schema": {"type": "string"}}}}}}},
        "/static/app.js": {"get": {"summary": "Countdown and live refresh script", "security": OPEN,
                                   "tags": ["pages"],
                                   "responses": {"200": {"description": "JavaScript", "content": {
                                       "text/javascript": {"schema": {"type": "string"}}}}}}},
    }
    paths.update(_extra_paths())
    paths.update(_review_paths())
    paths.update(_access_paths())
    for path, item in paths.items():  # every signed-in route: 403 for a role without the right, 429 throttled
        for op in item.values():
            if op.get("security") == SIGNED_IN:
                op["responses"].setdefault("403", _err(FORBIDDEN) if path.startswith("/api/") else _page(FORBIDDEN))
                op["responses"].setdefault("429", _err("Too many failed sign-ins from this client"))
    paths["/api/v1/plans/{plan_id}/approve"]["post"]["responses"]["202"] = {
        "description": "Recorded; waits for more approvals (four eyes)", "content": _json("ApproveResult")}
    return {
        "openapi": "3.0.3",
        "info": {"title": "jml", "version": "1",
                 "description": "Joiner-Mover-Leaver provisioning daemon: health, metrics, webhooks, the signed-in "
                                "pages and the JSON API. Sign in through the identity provider (OIDC, GET /login), "
                                "with a scoped API token (`jml token create`), or — break-glass, audited on each "
                                "use — with the admin token."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "ops"}, {"name": "webhooks"}, {"name": "pages"}, {"name": "api"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A scoped API token (`jml token create NAME --role ROLE`), or the "
                                              "admin token (break-glass, audited on each use)"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "jml_session",
                                  "description": "Opened by the OIDC sign-in (GET /login → /auth/callback) or the "
                                                 "break-glass POST /login; state-changing requests also need the "
                                                 "session's CSRF token"},
                "oktaAuthorization": {"type": "apiKey", "in": "header", "name": "Authorization",
                                      "description": "The value configured in the Okta event hook, compared whole"},
                "hrSignature": {"type": "apiKey", "in": "header", "name": "X-JML-Signature",
                                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + raw body>"},
            },
            "schemas": _schemas(),
        },
    }
