"""Get the latest HR export's bytes: a file, the newest file in a folder, the newest object
under an S3 prefix, or a report URL (Workday RaaS, BambooHR custom report, any HTTPS GET).

The I/O shell around sources.hris: no parsing here. Every failure becomes one SourceError
naming the location (URLs without userinfo or secret-looking query values) and never the
credentials; a failed read never looks like an empty export.

Auth for http(s) sources (`sources.hris.auth`):
  * `type: bearer, token_env: X` -> `Authorization: Bearer <token>` (Workday OAuth client).
  * `type: basic, username: isu@tenant, password_env: X` -> HTTP Basic (Workday ISU).
  * `type: basic, token_env: X` and no username -> BambooHR: the API key is the Basic
    username and the password is the literal "x" (BambooHR's convention), so the key stays
    out of the YAML.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp

from jml.config import HrisSource
from jml.errors import SourceError
from jml.redact import register_secret

_FORMAT_EXTENSIONS = {"csv": (".csv",), "json": (".json",), "jsonl": (".jsonl", ".ndjson")}
_ALL_EXTENSIONS = tuple(e for exts in _FORMAT_EXTENSIONS.values() for e in exts)
# Query parameters whose values are credentials when people put them in a URL.
_SECRET_PARAMS = {"key", "api_key", "apikey", "token", "access_token", "password", "signature", "sig", "secret"}
_CONTENT_TYPES = {"text/csv": ".csv", "application/json": ".json", "application/x-ndjson": ".jsonl"}
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=30, sock_read=60)


@dataclass(frozen=True, slots=True)
class Fetched:
    location: str  # where it came from, safe to show (no credentials)
    name: str  # file or object name, for parse_export's format detection and messages
    data: bytes
    checksum: str  # sha256 hex of data
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class FetchMarker:
    """What the previous successful read saw, so an unchanged source is not read again."""

    checksum: str | None
    etag: str | None
    last_modified: str | None


SecretFn = Callable[[str], str | None]


async def fetch(
    src: HrisSource,
    *,
    base_dir: Path,
    previous: FetchMarker | None = None,
    secret: SecretFn | None = None,
) -> Fetched | None:
    """The newest export at src.location, or None when it is the one `previous` describes
    (HTTP 304, the same S3 ETag, or the same bytes)."""
    location = src.location
    scheme = urllib.parse.urlsplit(location).scheme.lower() if "://" in location else ""
    if scheme == "s3":
        got = await _fetch_s3(src, previous)
    elif scheme in ("http", "https"):
        got = await _fetch_http(src, previous, secret)
    elif scheme in ("", "file"):
        path = Path(urllib.parse.urlsplit(location).path if scheme == "file" else location)
        got = await asyncio.to_thread(_fetch_path, path if path.is_absolute() else base_dir / path, src.format)
    else:
        raise SourceError(
            f"unsupported location scheme {scheme!r} (use a path, s3:// or https://)", file=safe_url(location)
        )
    if got is not None and previous is not None and previous.checksum == got.checksum:
        return None  # new timestamp, same bytes: nothing new to read
    return got


def safe_url(url: str) -> str:
    """The URL without userinfo and with credential-looking query values masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    masked = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in query]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, urllib.parse.urlencode(masked, safe="*!"), ""))


def _wanted(name: str, fmt: str | None) -> bool:
    """A finished export file: right extension, not hidden, not a partial download."""
    if name.startswith(".") or name.startswith("~"):
        return False
    lowered = name.lower()
    return lowered.endswith(_FORMAT_EXTENSIONS[fmt] if fmt else _ALL_EXTENSIONS)


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_path(path: Path, fmt: str | None) -> Fetched:
    where = str(path)
    try:
        if path.is_dir():
            candidates = []
            for entry in path.iterdir():
                if _wanted(entry.name, fmt) and entry.is_file():
                    st = entry.stat()
                    candidates.append((st.st_mtime_ns, entry.name, entry))
            if not candidates:
                kinds = "/".join(_FORMAT_EXTENSIONS[fmt] if fmt else _ALL_EXTENSIONS)
                raise SourceError(f"no {kinds} export in the folder", file=where)
            path = max(candidates)[2]  # newest; the name breaks a tie
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError("not found", file=str(path)) from None
    except IsADirectoryError:
        raise SourceError("is a directory", file=str(path)) from None
    except OSError as e:
        raise SourceError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat()
    return Fetched(str(path), path.name, data, _checksum(data), None, modified)


async def _fetch_s3(src: HrisSource, previous: FetchMarker | None) -> Fetched | None:
    return await asyncio.to_thread(_fetch_s3_sync, src, previous)


def _fetch_s3_sync(src: HrisSource, previous: FetchMarker | None) -> Fetched | None:
    import boto3  # imported here: only S3 sources pay for it
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urllib.parse.urlsplit(src.location)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    where = f"s3://{bucket}/{prefix}"
    try:
        # Region and credentials come from the environment / instance role, as boto3 does.
        client = boto3.client("s3", endpoint_url=src.endpoint_url)
        newest: dict[str, Any] | None = None
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/") or not _wanted(PurePosixPath(key).name, src.format):
                    continue
                if newest is None or (obj["LastModified"], key) > (newest["LastModified"], newest["Key"]):
                    newest = dict(obj)
        if newest is None:
            raise SourceError("no export object under this prefix", file=where)
        key, etag = newest["Key"], newest.get("ETag")
        if previous is not None and etag and previous.etag == etag:
            return None
        got = client.get_object(Bucket=bucket, Key=key, IfMatch=etag) if etag else client.get_object(
            Bucket=bucket, Key=key
        )
        data = got["Body"].read()
        etag = got.get("ETag", etag)
        modified = got.get("LastModified", newest["LastModified"])
    except SourceError:
        raise
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise SourceError(f"S3 {code}", file=where) from None
    except BotoCoreError as e:
        raise SourceError(f"S3 unreachable: {type(e).__name__}", file=where) from None
    location = f"s3://{bucket}/{key}"
    return Fetched(location, PurePosixPath(key).name, data, _checksum(data), etag, modified.isoformat())


def _auth_header(src: HrisSource, secret: SecretFn | None) -> dict[str, str]:
    auth = src.auth
    if auth is None:
        return {}
    where = safe_url(src.location)

    def need(name: str) -> str:
        value = secret(name) if secret is not None else None
        if not value:
            raise SourceError(f"auth {auth.type} needs {name}_env or {name}_file", file=where)
        register_secret(value)
        return value

    if auth.type == "bearer":
        return {"Authorization": f"Bearer {need('token')}"}
    if auth.username:
        basic = aiohttp.BasicAuth(auth.username, need("password"))
    else:  # BambooHR: API key as the username, any password ("x" by convention)
        basic = aiohttp.BasicAuth(need("token"), "x")
    return {"Authorization": basic.encode()}


async def _fetch_http(src: HrisSource, previous: FetchMarker | None, secret: SecretFn | None) -> Fetched | None:
    where = safe_url(src.location)
    headers = _auth_header(src, secret)
    if headers and urllib.parse.urlsplit(src.location).username is not None:
        raise SourceError("credentials both in the URL and in sources.hris.auth: keep them in auth only", file=where)
    if previous is not None and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous is not None and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    try:
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.get(src.location, headers=headers) as resp,
        ):
            if resp.status == 304:
                return None
            if resp.status != 200:
                raise SourceError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(), file=where)
            data = await resp.read()
            etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            ctype = resp.content_type
    except SourceError:
        raise
    except TimeoutError:
        raise SourceError("timed out", file=where) from None
    except aiohttp.ClientError as e:
        # Includes a body cut short (ClientPayloadError): never hand on a partial export.
        raise SourceError(f"request failed: {type(e).__name__}", file=where) from None
    except (ValueError, OSError) as e:  # a malformed URL or header; the message may echo the URL
        raise SourceError(f"request failed: {type(e).__name__}", file=where) from None
    return Fetched(where, _http_name(src.location, ctype), data, _checksum(data), etag, modified)


def _http_name(url: str, content_type: str) -> str:
    """A file-like name for format detection: the last path segment, given an extension
    from Workday's ?format= or the Content-Type when it has none."""
    parts = urllib.parse.urlsplit(url)
    name = PurePosixPath(parts.path).name or parts.hostname or "export"
    if name.lower().endswith(_ALL_EXTENSIONS):
        return name
    fmt = dict(urllib.parse.parse_qsl(parts.query)).get("format", "").lower()
    if fmt in _FORMAT_EXTENSIONS:
        return name + _FORMAT_EXTENSIONS[fmt][0]
    return name + _CONTENT_TYPES.get(content_type, "")
