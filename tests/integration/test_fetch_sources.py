"""Fetching from real peers on loopback: moto's S3 server and an aiohttp report server."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from jml.config import HrisSource, SourceAuth
from jml.errors import SourceError
from jml.sources.fetch import FetchMarker, fetch
from jml.sources.hris import parse_export

EXPORT = b"employee_id,status,work_email\nE1,Active,a@x.example\n"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"hr-{time.monotonic_ns()}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket  # type: ignore[attr-defined]
    return client


async def test_s3_newest_object_then_unchanged_by_etag(s3: object, moto_url: str) -> None:
    client, bucket = s3, s3.bucket  # type: ignore[attr-defined]
    client.put_object(Bucket=bucket, Key="workday/day0.csv", Body=b"old")  # type: ignore[attr-defined]
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    client.put_object(Bucket=bucket, Key="workday/day1.csv", Body=EXPORT)  # type: ignore[attr-defined]
    client.put_object(Bucket=bucket, Key="workday/day2.csv.part", Body=b"partial")  # type: ignore[attr-defined]
    client.put_object(Bucket=bucket, Key="other/day9.csv", Body=b"elsewhere")  # type: ignore[attr-defined]
    src = HrisSource(location=f"s3://{bucket}/workday/", endpoint_url=moto_url)
    got = await fetch(src, base_dir=Path("."))
    assert got is not None
    assert (got.location, got.name, got.data) == (f"s3://{bucket}/workday/day1.csv", "day1.csv", EXPORT)
    assert got.checksum == hashlib.sha256(EXPORT).hexdigest() and got.etag
    assert parse_export(got.data, name=got.name, format=None).people[0].employee_id == "E1"
    marker = FetchMarker(got.checksum, got.etag, got.last_modified)
    assert await fetch(src, base_dir=Path("."), previous=marker) is None


@pytest.mark.parametrize(("location", "pattern"), [
    ("s3://{bucket}/nothing-here/", "no export object under this prefix"),
    ("s3://no-such-bucket-jml/x/", "NoSuchBucket"),
])
async def test_s3_failures(s3: object, moto_url: str, location: str, pattern: str) -> None:
    src = HrisSource(location=location.format(bucket=s3.bucket), endpoint_url=moto_url)  # type: ignore[attr-defined]
    with pytest.raises(SourceError, match=pattern) as e:
        await fetch(src, base_dir=Path("."))
    assert "s3://" in str(e.value) and "testing" not in str(e.value)


async def test_s3_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    src = HrisSource(location="s3://b/p/", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(SourceError, match="S3 unreachable"):
        await fetch(src, base_dir=Path("."))


# --- HTTP report server ------------------------------------------------------------------

ETAG = '"v1"'
BASIC = "Basic " + base64.b64encode(b"isu@acme:pa55word").decode()
BAMBOO = "Basic " + base64.b64encode(b"bamboo-api-key:x").decode()
BEARER = "Bearer tok-123456"


async def report(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") not in (BASIC, BAMBOO, BEARER):
        return web.Response(status=401, text="bad credentials")
    if request.headers.get("If-None-Match") == ETAG:
        return web.Response(status=304)
    if request.path.endswith("/cut"):  # promises more than it sends, then hangs up
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(EXPORT)
        request.transport.close()  # type: ignore[union-attr]
        return resp
    ctype = "application/json" if request.query.get("format") == "json" else "text/csv"
    body = b'{"Report_Entry": [{"Employee_ID": "7", "Active_Status": "1"}]}' if ctype == "application/json" else EXPORT
    headers = {"ETag": ETAG, "Last-Modified": "Mon, 23 Nov 2026 10:00:00 GMT"}
    return web.Response(body=body, content_type=ctype, headers=headers)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", report)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


SECRETS = {"password": "pa55word", "token": "tok-123456"}


@pytest.mark.parametrize(("auth", "secrets"), [
    (SourceAuth(type="basic", username="isu@acme", password_env="WD_PASSWORD"), SECRETS),
    (SourceAuth(type="bearer", token_env="WD_TOKEN"), SECRETS),
    (SourceAuth(type="basic", token_env="BAMBOO_KEY"), {"token": "bamboo-api-key"}),
])
async def test_http_auth_then_etag_304(http_url: str, auth: SourceAuth, secrets: dict[str, str]) -> None:
    src = HrisSource(location=f"{http_url}/ccx/service/customreport2/acme/isu/Workers", auth=auth)
    got = await fetch(src, base_dir=Path("."), secret=secrets.get)
    assert got is not None and got.data == EXPORT
    assert got.name == "Workers.csv"  # extension from the Content-Type
    assert got.etag == ETAG and got.last_modified
    marker = FetchMarker(got.checksum, got.etag, got.last_modified)
    assert await fetch(src, base_dir=Path("."), previous=marker, secret=secrets.get) is None


async def test_workday_json_report_name_and_parse(http_url: str) -> None:
    src = HrisSource(location=f"{http_url}/ccx/service/customreport2/acme/isu/Workers?format=json",
                     auth=SourceAuth(type="bearer", token_env="T"))
    got = await fetch(src, base_dir=Path("."), secret=SECRETS.get)
    assert got is not None and got.name == "Workers.json"
    person = parse_export(got.data, name=got.name, format=None, profile="workday").people[0]
    assert person.employee_id == "7"


BEARER_AUTH = SourceAuth(type="bearer", token_env="T")


@pytest.mark.parametrize(("path", "auth", "secrets", "pattern"), [
    ("/r", SourceAuth(type="basic", username="isu@acme", password_env="P"), {"password": "wrong-pass"}, "HTTP 401"),
    ("user:hunter22@/r", None, {}, "HTTP 401"),  # credentials in the URL: used, never shown
    ("user:hunter22@/r", BEARER_AUTH, SECRETS, "both in the URL and in sources.hris.auth"),
    ("/r", BEARER_AUTH, {}, "needs token_env"),
    ("/cut", BEARER_AUTH, SECRETS, "request failed: ClientPayloadError"),
])
async def test_http_failures(http_url: str, path: str, auth: SourceAuth | None, secrets: dict[str, str],
                             pattern: str) -> None:
    userinfo, _, path = path.rpartition("@")
    location = http_url.replace("http://", f"http://{userinfo}@") if userinfo else http_url
    src = HrisSource(location=location + path, auth=auth)
    with pytest.raises(SourceError, match=pattern) as e:
        await fetch(src, base_dir=Path("."), secret=secrets.get)
    text = str(e.value)
    assert "127.0.0.1" in text
    assert "hunter22" not in text and "wrong-pass" not in text


async def test_http_unreachable() -> None:
    src = HrisSource(location="http://127.0.0.1:9/report.csv")
    with pytest.raises(SourceError, match="request failed"):
        await fetch(src, base_dir=Path("."))


def test_marker_dates_are_plain_strings() -> None:
    # Markers are stored between runs: every field must survive a text round trip.
    m = FetchMarker("abc", '"e"', dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat())
    assert all(isinstance(v, str) for v in (m.checksum, m.etag, m.last_modified))
