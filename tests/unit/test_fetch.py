"""Fetching exports from local files and folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jml.config import HrisSource
from jml.errors import SourceError
from jml.sources.fetch import FetchMarker, fetch, safe_url


def put(path: Path, data: bytes, mtime: int) -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


async def test_file_by_relative_path(tmp_path: Path) -> None:
    put(tmp_path / "hr.csv", b"employee_id,status\nE1,Active\n", 1_700_000_000)
    got = await fetch(HrisSource(location="hr.csv"), base_dir=tmp_path)
    assert got is not None
    assert got.name == "hr.csv" and got.data.startswith(b"employee_id")
    assert got.location == str(tmp_path / "hr.csv")
    assert got.last_modified is not None and got.last_modified.startswith("2023-11-14")


@pytest.mark.parametrize(("fmt", "files", "expect"), [
    (None, {"a.csv": 1, "b.csv": 3, "c.csv": 2}, "b.csv"),
    ("csv", {"a.csv": 1, "b.json": 3}, "a.csv"),
    ("json", {"a.csv": 5, "b.json": 3}, "b.json"),
    ("jsonl", {"a.ndjson": 2, "b.jsonl": 1}, "a.ndjson"),
    # partial downloads, editor and hidden files never win, however new
    ("csv", {"a.csv": 1, "b.csv.tmp": 9, "c.csv.part": 9, ".d.csv": 9, "~e.csv": 9, "f.CSV": 2}, "f.CSV"),
    ("csv", {"a.csv": 5, "b.csv": 5}, "b.csv"),  # same mtime: the name breaks the tie
])
async def test_folder_takes_the_newest_export(tmp_path: Path, fmt: str | None, files: dict[str, int],
                                              expect: str) -> None:
    for name, age in files.items():
        put(tmp_path / name, name.encode(), 1_700_000_000 + age)
    (tmp_path / "sub.csv").mkdir()  # a folder with a matching name is not a file
    os.utime(tmp_path / "sub.csv", (1_800_000_000, 1_800_000_000))
    got = await fetch(HrisSource(location=str(tmp_path), format=fmt), base_dir=Path("/"))
    assert got is not None and got.name == expect


@pytest.mark.parametrize(("setup", "pattern"), [
    ("missing", "not found"),
    ("empty_dir", "no .csv export in the folder"),
])
async def test_failures_name_the_location(tmp_path: Path, setup: str, pattern: str) -> None:
    target = tmp_path / "exports"
    if setup == "empty_dir":
        target.mkdir()
        (target / "x.csv.part").write_bytes(b"half")
    with pytest.raises(SourceError, match=pattern) as e:
        await fetch(HrisSource(location=str(target), format="csv"), base_dir=tmp_path)
    assert str(target) in str(e.value)


async def test_unsupported_scheme() -> None:
    with pytest.raises(SourceError, match="unsupported location scheme 'ftp'"):
        await fetch(HrisSource(location="ftp://user:hunter22@host/x.csv"), base_dir=Path("."))


async def test_same_bytes_as_last_time_is_unchanged(tmp_path: Path) -> None:
    path = put(tmp_path / "hr.csv", b"employee_id,status\nE1,Active\n", 1_700_000_000)
    first = await fetch(HrisSource(location=str(path)), base_dir=tmp_path)
    assert first is not None
    marker = FetchMarker(first.checksum, first.etag, first.last_modified)
    os.utime(path, (1_700_000_100, 1_700_000_100))  # touched, not changed
    assert await fetch(HrisSource(location=str(path)), base_dir=tmp_path, previous=marker) is None
    path.write_bytes(b"employee_id,status\nE1,Terminated\n")
    again = await fetch(HrisSource(location=str(path)), base_dir=tmp_path, previous=marker)
    assert again is not None and again.checksum != first.checksum


@pytest.mark.parametrize(("url", "expect"), [
    ("https://isu:s3cret@wd.example/ccx/r?format=json", "https://wd.example/ccx/r?format=json"),
    ("https://h.example:8443/r?api_key=abc&x=1", "https://h.example:8443/r?api_key=***&x=1"),
    ("http://127.0.0.1/x", "http://127.0.0.1/x"),
])
def test_safe_url(url: str, expect: str) -> None:
    assert safe_url(url) == expect
