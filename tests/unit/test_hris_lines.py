"""CSV row hashes over raw lines (issue 16): a known, unchanged line is taken with one dict
probe and never split. It must give exactly what reading every line gives.

Three references for every export read with known hashes ("fast"):

* the same read with the fast path off (every line through csv.reader, hashes compared
  afterwards): equal in every field;
* a read with no known hashes: the same row hashes, quarantine (named) and row count; its
  people are the fast read's people plus the unchanged rows;
* the row loop as it was before line hashes (_Parser.run over csv.reader, the loop JSON
  exports still use): the same people, quarantine and row count, or the same rejection.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jml.errors import ExportRejected
from jml.sources import csv_lines, hris
from jml.sources.hris import ParsedExport, parse_export
from jml.sources.profiles import resolve_profile

HEADER = ["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date",
          "termination_date", "notes"]


def person(i: int, **over: str) -> dict[str, str]:
    base = {"employee_id": f"E{i}", "first_name": f"Ana{i}", "last_name": "Smith", "work_email": f"p{i}@x.example",
            "department": "Engineering", "status": "Active", "hire_date": "2020-01-02", "termination_date": "",
            "notes": ""}
    base.update(over)
    return base


def line(r: Mapping[str, str], *, quote_all: bool = False, delimiter: str = ",") -> str:
    out = io.StringIO()  # (the line terminator also says which characters need quotes: \r and \n)
    csv.writer(out, lineterminator="\r\n", delimiter=delimiter,
               quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerow([r[h] for h in HEADER])
    return out.getvalue()[:-2]


def export(rows: Sequence[Mapping[str, str]], nl: str = "\r\n", *, tail: str | None = None, bom: bool = False,
           quote_all: frozenset[int] = frozenset(), delimiter: str = ",") -> bytes:
    text = nl.join([delimiter.join(HEADER)] + [line(r, quote_all=k in quote_all, delimiter=delimiter)
                                               for k, r in enumerate(rows)])
    text += nl if tail is None else tail
    return (codecs.BOM_UTF8 if bom else b"") + text.encode()


def read(data: bytes, known: Mapping[str, str] | None, *, fast: bool = True) -> ParsedExport:
    saved = hris._FAST_LINES
    hris._FAST_LINES = fast
    try:
        return parse_export(data, name="day.csv", format="csv", known_hashes=known)
    finally:
        hris._FAST_LINES = saved


def before_line_hashes(data: bytes) -> ParsedExport:
    """The CSV read as it was before raw-line hashes: every row through csv.reader, then the
    row loop (still jml's JSON loop). Only the hashes differ (v1: over the values)."""
    text = hris._decode(data, "day.csv")
    if not text.strip():
        raise ExportRejected("the export is empty", file="day.csv")
    delimiter = hris._delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    header, header_row = hris._csv_header(reader, "day.csv")
    try:
        parser = hris._Parser("day.csv", header, resolve_profile("generic", None, None), None, {}, csv_mode=True)
    except ExportRejected as e:
        if "missing required columns" not in str(e):
            raise
        seen = ", ".join(repr(h) for h in header[:8]) + (" …" if len(header) > 8 else "")
        shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
        raise ExportRejected(f"{str(e).removeprefix('day.csv: ')}; the header read with delimiter {shown} has "
                             f"{len(header)} column(s): {seen}", file="day.csv") from None
    try:
        return parser.run(enumerate(reader, header_row + 1))
    except csv.Error as e:
        raise ExportRejected(f"malformed CSV near line {reader.line_num}: {e}; the file may be cut off",
                             file="day.csv") from None


def outcome(f: object) -> ParsedExport | str:
    try:
        return f()  # type: ignore[operator,no-any-return]
    except ExportRejected as e:
        return f"rejected: {e}"


def check(day0: bytes, day1: bytes, known: Mapping[str, str] | None = None) -> ParsedExport | str:
    """Read day1 with the hashes day0 left (or `known`), fast and every reference; returns the fast read."""
    if known is None:
        first = outcome(lambda: read(day0, None))
        known = first.row_hashes if isinstance(first, ParsedExport) else {}
    fast = outcome(lambda: read(day1, known))
    slow = outcome(lambda: read(day1, known, fast=False))
    assert fast == slow
    full = outcome(lambda: read(day1, None))
    old = outcome(lambda: before_line_hashes(day1))
    if isinstance(fast, str):
        assert fast == full == old
        return fast
    assert isinstance(full, ParsedExport) and isinstance(old, ParsedExport)
    assert fast.row_hashes == full.row_hashes
    assert fast.quarantined == full.quarantined
    assert (fast.row_count, fast.quarantined_ids, fast.columns) == (full.row_count, full.quarantined_ids,
                                                                    full.columns)
    same = [p for p in full.people if known.get(p.employee_id) == full.row_hashes[p.employee_id]]
    assert fast.people == [p for p in full.people if p not in same]
    assert fast.unchanged == len(same)
    assert full.people == old.people
    assert [(q.row, q.field, q.message, q.employee_id) for q in full.quarantined] == [
        (q.row, q.field, q.message, q.employee_id) for q in old.quarantined]
    assert (full.row_count, full.quarantined_ids) == (old.row_count, old.quarantined_ids)
    return fast


# --- table --------------------------------------------------------------------------------

ROWS = [person(i) for i in range(6)]
MULTI = [*ROWS[:2], person(2, notes="line one\nline two, with a comma"), *ROWS[3:]]
# A cell whose second line is, byte for byte, E1's whole line: the fast pass hashes it and
# finds E1, but it is inside E7's record. E1 is not in this export.
HIDDEN = [ROWS[0], person(7, notes="see below\n" + line(ROWS[1]) + "\nend"), *ROWS[2:]]


@pytest.mark.parametrize(("day0", "day1", "people", "unchanged", "set_aside"), [
    pytest.param(export(ROWS), export(ROWS, tail="\r\n\n"), [], 6, [], id="bench noop: CRLF plus a stray LF"),
    pytest.param(export(ROWS), export(ROWS, "\n"), [], 6, [], id="CRLF to LF: line breaks are not content"),
    pytest.param(export(ROWS, bom=True), export(ROWS, tail=""), [], 6, [], id="BOM, no final line break"),
    pytest.param(export(ROWS), export(ROWS, "\r"), [], 6, [], id="old Mac CR lines"),
    pytest.param(export(ROWS), export([ROWS[0], person(1, department="Sales"), *ROWS[2:]]), ["E1"], 5, [],
                 id="a mover"),
    pytest.param(export(ROWS), export(ROWS, quote_all=frozenset({3})), ["E3"], 5, [],
                 id="quoting changed: re-read, same person"),
    pytest.param(export(ROWS), export(ROWS[:4]), [], 4, [], id="rows gone"),
    pytest.param(export(ROWS), export([ROWS[5], *ROWS[:5]]), [], 6, [], id="reordered"),
    pytest.param(export(MULTI), export(MULTI), [], 6, [], id="multi-line cell, CRLF"),
    pytest.param(export(MULTI, "\n"), export(MULTI, "\n", tail=""), [], 6, [], id="multi-line cell, LF"),
    pytest.param(export(MULTI), export([*MULTI[:2], person(2, notes="line one\nline 2"), *MULTI[3:]]), ["E2"], 5,
                 [], id="multi-line cell changed"),
    pytest.param(export(ROWS), export(HIDDEN), ["E7"], 5, [], id="a known line inside a quoted cell"),
    pytest.param(export(ROWS), export([*ROWS, ROWS[2]]), [], 5, [(4, "employee_id"), (8, "employee_id")],
                 id="a known line twice"),
    pytest.param(export(ROWS), export([*ROWS, person(2, first_name="Bo")]), [], 5,
                 [(4, "employee_id"), (8, "employee_id")], id="a known id on a changed line"),
    pytest.param(export(ROWS), export([*ROWS, person(9, work_email="P3@x.example ")]), [], 5,
                 [(5, "work_email"), (8, "work_email")], id="a known address on a new line"),
    pytest.param(export([ROWS[0], person(1, status="Terminated", termination_date="2024-01-31",
                                         work_email="p0@x.example")]),
                 export([ROWS[0], person(1, status="Terminated", termination_date="2024-01-31",
                                         work_email="p0@x.example")]), [], 2, [],
                 id="a terminated row keeps its address"),
    pytest.param(export([person(1, work_email="b@x.example"), person(2, work_email="c@x.example")]),
                 export([person(1, work_email="b@x.example"), person(2, work_email="c@x.example")]),
                 [], 2, [], id="two addresses with one e-mail tag (see test_a_shared_tag_is_not_a_shared_address)"),
    pytest.param(export(ROWS), export([*ROWS[:5], person(5, status="Retired")]), [], 5, [(7, "status")],
                 id="a bad changed row"),
    pytest.param(export(ROWS), export(ROWS)[:-12], [], 0, [], id="cut mid-row: refused"),
    pytest.param(export(ROWS), export(ROWS) + b'E9,"an open quote', [], 0, [], id="cut mid-cell: refused"),
    pytest.param(export(ROWS), export(ROWS).replace(b"Smith", b"Sm\"ith", 1), ["E0"], 5, [],
                 id="a quote inside an unquoted cell"),
    pytest.param(export(ROWS), export(ROWS, tail="\r\n\r\n\r\n"), [], 6, [], id="blank lines at the end"),
    pytest.param(export(ROWS), export([*ROWS[:3], {**ROWS[3], "employee_id": ""}, *ROWS[4:]]), [], 5,
                 [(5, "employee_id")], id="an id removed"),
])
def test_known_lines_read_as_every_line(day0: bytes, day1: bytes, people: list[str], unchanged: int,
                                        set_aside: list[tuple[int, str]]) -> None:
    got = check(day0, day1)
    if isinstance(got, str):
        assert "cut off" in got
        return
    assert [p.employee_id for p in got.people] == people
    assert got.unchanged == unchanged
    assert [(q.row, q.field) for q in got.quarantined] == set_aside


def test_a_line_inside_a_cell_is_not_that_person() -> None:
    got = check(export(ROWS), export(HIDDEN))
    assert isinstance(got, ParsedExport)
    assert "E1" not in got.row_hashes and "E7" in got.row_hashes
    assert got.people[0].extra["notes"] == HIDDEN[1]["notes"]


def test_set_aside_known_lines_are_named() -> None:
    got = check(export(ROWS), export([*ROWS, person(9, first_name="Bo", work_email="p3@x.example")]))
    assert isinstance(got, ParsedExport)
    assert {(q.row, q.name, q.email) for q in got.quarantined} == {(5, "Ana3 Smith", "p3@x.example"),
                                                                    (8, "Bo Smith", "p3@x.example")}


def test_the_error_line_is_the_one_csv_reader_counts() -> None:
    data = export(MULTI) + b'E9,"open\r\nstill open'
    got = check(export(MULTI), data)
    assert got == before_line_hashes_message(data)


@pytest.mark.parametrize(("day1", "pattern"), [
    (export(ROWS).replace(b"Ana4", b"An\xffa4"), r"not UTF-8: invalid byte 0xff at byte offset \d+ \(line 6\)"),
    (export(ROWS).replace(b"Ana1", b'"A"na1').replace(b"Ana4", b"An\xffa4"), "not UTF-8"),  # wins over bad CSV
    (b"\xef\xbb\xbf" + export(ROWS[:1]).replace(b"E0", b"\xc3"), r"0xc3 at byte offset \d+ \(line 2\)"),
    (export(ROWS).replace(HEADER[0].encode(), b"\xe2\x82"), "not UTF-8"),  # in the header
    ("\u3000\r\n\u2003 \n".encode(), "the export is empty"),
    ("\u3000x\u2003".encode(), "missing required columns"),
    ("Ärzte,status\r\nE1,Active\r\n".encode(), "missing required columns: employee_id"),
])
def test_refusals_are_those_of_a_whole_file_read(day1: bytes, pattern: str) -> None:
    got = check(export(ROWS), day1)
    assert isinstance(got, str)
    assert re.search(pattern, got), got


def before_line_hashes_message(data: bytes) -> str:
    try:
        before_line_hashes(data)
    except ExportRejected as e:
        return f"rejected: {e}"
    raise AssertionError("not refused")


def test_hashes_from_before_the_upgrade_match_nothing() -> None:
    """v1 hashes (over the values) never match a line hash: every row is read and planned once."""
    old = before_line_hashes(export(ROWS))
    got = check(export(ROWS), export(ROWS), known=old.row_hashes)
    assert isinstance(got, ParsedExport)
    assert got.unchanged == 0 and [p.employee_id for p in got.people] == [f"E{i}" for i in range(6)]
    again = read(export(ROWS, tail="\r\n\n"), got.row_hashes)
    assert again.unchanged == 6 and again.people == []


def test_the_hash_covers_delimiter_header_and_profile() -> None:
    semi = export(ROWS, delimiter=";")
    known = read(export(ROWS), None).row_hashes
    assert read(semi, known).unchanged == 0
    assert read(semi, read(semi, None).row_hashes).unchanged == 6
    other = parse_export(export(ROWS), name="day.csv", format="csv", status_values={"Active": "Leave"},
                         known_hashes=known)
    assert other.unchanged == 0


def test_row_hash_shape() -> None:
    hashes = read(export([ROWS[0], person(1, status="Terminated", termination_date="2024-01-31")]), None).row_hashes
    assert len(hashes["E0"]) == 48 and len(hashes["E1"]) == 32  # a terminated row's address is not compared
    assert all(c in "0123456789abcdef" for h in hashes.values() for c in h)


def test_json_exports_keep_their_value_hashes() -> None:
    import json

    data = json.dumps(ROWS).encode()
    first = parse_export(data, name="x.json", format=None)
    second = parse_export(json.dumps(list(reversed(ROWS)), indent=1).encode(), name="x.json", format=None,
                          known_hashes=first.row_hashes)
    assert second.unchanged == 6 and second.people == []
    lines = "\n".join(json.dumps(r) for r in ROWS).encode()
    third = parse_export(lines, name="x.jsonl", format=None, known_hashes=first.row_hashes)
    assert third.unchanged == 6


# --- generated ----------------------------------------------------------------------------

cell = st.lists(st.sampled_from([*"ab ,;\"'\n\r\t|é€", "\r\n"]), max_size=6).map("".join)
row_st = st.builds(
    lambda i, first, notes, email, status: person(i, first_name=first, notes=notes, work_email=email, status=status),
    st.integers(0, 7), cell, cell,
    st.sampled_from(["", "a@x.example", "b@x.example", "A@x.example ", "not an email"]),
    st.sampled_from(["Active", "Terminated", "Leave", "??"]))


@st.composite
def days(draw: st.DrawFn) -> tuple[bytes, bytes]:
    rows0 = draw(st.lists(row_st, min_size=1, max_size=8))
    # day 1: kept, changed, dropped, repeated and new rows, in any order
    rows1 = [r for r in rows0 if draw(st.booleans()) or draw(st.booleans())]
    rows1 += draw(st.lists(st.one_of(row_st, st.sampled_from(rows0)), max_size=3))
    rows1 = draw(st.permutations(rows1)) if rows1 else [person(0)]
    if draw(st.booleans()):  # a cell holding another row's whole line between line breaks
        k, other = draw(st.integers(0, len(rows1) - 1)), draw(st.sampled_from(rows0))
        nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        rows1[k] = {**rows1[k], "notes": nl + line(other) + nl}

    def one(rows: list[dict[str, str]]) -> bytes:
        nl = draw(st.sampled_from(["\r\n", "\n", "\r"]))
        tail = draw(st.sampled_from([None, "", nl + nl, "\n", "\r\n\n"]))
        quote_all = frozenset(draw(st.sets(st.integers(0, len(rows) - 1), max_size=2)))
        return export(rows, nl, tail=tail, bom=draw(st.booleans()), quote_all=quote_all)

    day0, day1 = one(rows0), one(rows1)
    if draw(st.booleans()):  # cut anywhere
        day1 = day1[:draw(st.integers(len(day1) // 2, len(day1)))]
    return day0, day1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days())
@example((export(ROWS), export(HIDDEN)))
@example((export(MULTI), export(MULTI, "\n", tail="\r\n\n")))
def test_generated_exports_read_as_every_line(pair: tuple[bytes, bytes]) -> None:
    check(*pair)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_arbitrary_bytes_after_a_header(junk0: bytes, junk1: bytes) -> None:
    head = ",".join(HEADER).encode() + b"\r\n" + export(ROWS[:2]).split(b"\r\n", 1)[1]
    check(head + junk0, head + junk1)


def test_fast_path_is_taken() -> None:
    """Known lines are never split: csv.reader sees only the header and the changed line."""
    seen: list[str] = []
    real = csv_lines.CsvLines.feed

    def feed(self: csv_lines.CsvLines, start: int) -> Iterator[str]:
        for s in real(self, start):
            seen.append(s)
            yield s

    day1 = export([ROWS[0], person(1, department="Sales"), *ROWS[2:]])
    known = read(export(ROWS), None).row_hashes
    csv_lines.CsvLines.feed = feed  # type: ignore[method-assign]
    try:
        got = read(day1, known)
    finally:
        csv_lines.CsvLines.feed = real  # type: ignore[method-assign]
    assert [p.employee_id for p in got.people] == ["E1"]
    assert len(seen) == 2 and seen[1].startswith("E1,")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "é", ",", '"', "\r", "\n", "\r\n", "\r\n\r\n", "\n\r"]), max_size=30))
@example(["a", "\r\n", "b", "\r\n", "\n"])  # the bench's no-change file: CRLF plus a stray LF at the end
def test_lines_are_the_lines_csv_reader_reads(parts: list[str]) -> None:
    text = "".join(parts)
    lines = csv_lines.CsvLines(text.encode())
    want = io.StringIO(text, newline="").readlines()
    assert list(lines.feed(0)) == want
    assert [lines.raw[i].decode() for i in range(lines.n)] == [csv_lines.without_break(x) for x in want]
    for i in range(lines.n):
        assert list(lines.feed(i)) == want[i:]
        assert lines.record(i, lines.n).decode() == csv_lines.without_break("".join(want[i:]))


def test_a_shared_tag_is_not_a_shared_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tags are short: when two are equal, the addresses on the lines decide."""
    monkeypatch.setattr(hris, "email_tag", lambda email: "0" * 16)  # every address one tag (where the parser calls it)
    rows = [person(1, work_email="b@x.example"), person(2, work_email="c@x.example"), person(3),
            person(4, work_email="B@x.example")]
    got = check(export(rows[:3]), export(rows))
    assert isinstance(got, ParsedExport)
    assert [p.employee_id for p in got.people] == []
    assert [(q.row, q.field, q.name) for q in got.quarantined] == [(2, "work_email", "Ana1 Smith"),
                                                                   (5, "work_email", "Ana4 Smith")]
    assert got.unchanged == 2
