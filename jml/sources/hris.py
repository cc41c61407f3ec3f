"""Parse an HR export (CSV, JSON, JSON lines) into Person records. Pure: bytes in, values out.

Two kinds of trouble, handled differently (README "Reliability": a bad export never deprovisions):

* the export as a whole is unsound (empty, not UTF-8, required columns missing, cut off
  mid-row, invalid JSON) -> ExportRejected, one message naming the file;
* one row is bad (no employee_id, unknown status, unreadable or out-of-range date,
  duplicate id or email, wrong number of fields) -> that row is quarantined with file, row and field, and its
  employee_id (when known) is reported so nobody is mistaken for a leaver because of it.

Row numbers: CSV rows are numbered as a spreadsheet shows them (the header is row 1, the
first data row is row 2; a multi-line quoted cell stays one row). JSON rows are the 1-based
position in the list; JSON lines rows are the line number.

Speed (100,000 rows): a CSV row's hash is taken over its raw line, before any split, all
lines in one pass of C calls; a line whose hash the caller already knows (`known_hashes`) is
an unchanged record, taken with one dictionary probe and never split, and only the other
lines go through csv.reader (column indices, conversion). Each hash carries a short tag of
the row's work_email, so duplicate ids and e-mails are still looked for over the whole
export. JSON rows are hashed over their values (one blake2b per row, as before). The lines
and their hash format are jml/sources/csv_lines.py's.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import datetime as dt
import gc
import hashlib
import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import compress, islice, repeat
from types import MappingProxyType
from typing import Any

from jml.errors import ExportRejected
from jml.model import Person, Status
from jml.sources.csv_lines import DIGEST_OF, LINE_VERSION, TAG_OF, CsvLines, email_tag
from jml.sources.profiles import REQUIRED_FIELDS, Profile, resolve_profile
from jml.timeparse import date_out_of_range

# Bumped when the hash input changes, so stored hashes from older versions never match.
# JSON rows: blake2b over the values. CSV rows: csv_lines.LINE_VERSION.
_HASH_VERSION = b"jml-row-v1"
# Set to False (tests only) to send every CSV line through csv.reader: the slow path the
# fast one must agree with.
_FAST_LINES = True
_SEP = "\x1f"
_EMPTY_EXTRA: Mapping[str, str] = MappingProxyType({})
_DATE_FIELDS = ("hire_date", "termination_date")
_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# YYYY-MM-DD, optionally followed by a time (T or blank) or a zone suffix such as Workday's
# "2020-12-31-08:00"; only the date part counts (the suffix is the ISU's zone, not the worker's).
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ].*|Z|[+-][0-9]{2}:?[0-9]{2})?", re.S)


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\Z")


@dataclass(frozen=True, slots=True)
class Quarantined:
    file: str
    row: int
    field: str
    message: str
    employee_id: str | None
    # Who the row is about, as far as it can be read (issue 17: a set-aside row must be findable).
    name: str = ""
    email: str = ""

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}, field {self.field}: {self.message}"


@dataclass(slots=True)
class ParsedExport:
    file: str
    checksum: str  # sha256 hex of the raw bytes
    columns: tuple[str, ...]  # header as found
    row_count: int  # data rows read, quarantined included
    people: list[Person]  # valid rows whose hash is not in known_hashes (all if it is None)
    row_hashes: dict[str, str]  # employee_id -> content hash, for every valid row
    unchanged: int  # valid rows skipped because their hash matched known_hashes
    quarantined: list[Quarantined] = field(default_factory=list)
    quarantined_ids: set[str] = field(default_factory=set)  # never treated as missing/leavers


# _Parser builds Person positionally (a third faster than keywords): fail loudly at import
# if model.Person's field order ever stops matching that assumption.
_PERSON_ORDER = list(Person.__dataclass_fields__)
if _PERSON_ORDER[:2] != ["employee_id", "status"] or _PERSON_ORDER[-1] != "extra":
    raise ImportError("jml.sources.hris expects Person(employee_id, status, ..., extra)")


class _RowError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def parse_export(
    data: bytes,
    *,
    name: str,
    format: str | None,
    profile: str = "generic",
    columns: Mapping[str, str] | None = None,
    status_values: Mapping[str, str] | None = None,
    known_hashes: Mapping[str, str] | None = None,
) -> ParsedExport:
    """Read one export. `known_hashes` (employee_id -> hash from the last accepted export)
    lets unchanged rows skip validation and conversion; they still count for duplicates."""
    # The parse allocates ~20 container objects per row and frees none of them: cyclic GC
    # passes over the growing heap cost ~15% and find nothing. Process-wide, but only for the
    # length of one parse; a parse running concurrently in another thread merely re-enables it.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _parse(data, name, format, resolve_profile(profile, columns, status_values), known_hashes)
    finally:
        if paused:
            gc.enable()


def _parse(
    data: bytes, name: str, format: str | None, prof: Profile, known_hashes: Mapping[str, str] | None
) -> ParsedExport:
    fmt = _format_of(format, name)
    if fmt == "csv":
        try:
            result = _parse_csv(data, name, prof, known_hashes)
        except (ExportRejected, UnicodeDecodeError):
            _decode(data, name)  # an export that is not UTF-8 is refused as that, whatever else is wrong
            raise
    else:
        text = _decode(data, name)
        if not text.strip():
            raise ExportRejected("the export is empty", file=name)
        pre: dict[int, _RowError] = {}
        header, records = _json_records(text, name, fmt, prof, pre)
        result = _Parser(name, header, prof, known_hashes, pre, csv_mode=False).run(records)
    result.checksum = hashlib.sha256(data).hexdigest()
    return result


def _parse_csv(data: bytes, name: str, prof: Profile, known_hashes: Mapping[str, str] | None) -> ParsedExport:
    """A CSV export. Not decoded as a whole: each line csv.reader reads is decoded (strictly),
    and a known line is, byte for byte, part of an export read before. So a file that is not
    UTF-8 raises UnicodeDecodeError here (or a rejection for what it made of the bytes), and
    _parse names the invalid byte as a whole-file decode does."""
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if _blank(body):
        raise ExportRejected("the export is empty", file=name)
    # The delimiter from the first 65,536 characters (at most 4 bytes each); an invalid byte
    # there is found when its line is read.
    delimiter = _delimiter(body[:4 * 65536].decode("utf-8", "replace")[:65536])
    lines = CsvLines(body)
    # strict: an unterminated quote at the end (a cut file) is an error, not a silent field.
    reader = csv.reader(lines.feed(0), strict=True, delimiter=delimiter)
    header, header_row = _csv_header(reader, name)
    try:
        parser = _Parser(name, header, prof, known_hashes, {}, csv_mode=True, delimiter=delimiter)
    except ExportRejected as e:
        if "missing required columns" not in str(e):
            raise
        # Name what was read, so a wrong delimiter or header row is plain to see (issue 17).
        seen = ", ".join(repr(h) for h in header[:8]) + (" …" if len(header) > 8 else "")
        shown = {"\t": "tab"}.get(delimiter, repr(delimiter))
        raise ExportRejected(f"{str(e).removeprefix(name + ': ')}; the header read with delimiter {shown} has "
                             f"{len(header)} column(s): {seen}", file=name) from None
    return parser.run_lines(lines, reader, header_row)


# What str.strip() strips among ASCII characters (str.isspace).
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _blank(body: bytes) -> bool:
    """Whether the decoded text would be only white space (not decoding it, mostly)."""
    rest = body.strip(_ASCII_SPACE)
    if not rest:
        return True
    if rest[0] < 0x80 or rest[-1] < 0x80:
        return False  # a character that is not white space
    try:
        return not body.decode().strip()
    except UnicodeDecodeError:
        return False  # refused as not UTF-8 (by _parse)


def health_problems(current: ParsedExport, *, last_columns: tuple[str, ...] | None) -> list[str]:
    """Why this export should not be trusted as a whole compared with the last accepted one
    (empty list: nothing wrong): its column set changed. (A shrink past max_shrink_percent
    is the guard's to judge, jml/guard.py: it holds the plan rather than reject the export.)"""
    if last_columns is None or set(current.columns) == set(last_columns):
        return []
    added = sorted(set(current.columns) - set(last_columns))
    removed = sorted(set(last_columns) - set(current.columns))
    parts = []
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    return [f"{current.file}: the column set changed since the last accepted export ({'; '.join(parts)})"]


def parse_date(value: str) -> dt.date | None:
    """An HR date: YYYY-MM-DD, with an optional time or zone suffix; '' and BambooHR's
    0000-00-00 mean no date. Anything else (31/12/2020, 2020-13-01) raises ValueError."""
    s = value.strip()
    if not s or s.startswith("0000-00-00"):
        return None
    if len(s) == 10 and s[4] == "-" and s[7] == "-" and s.isascii():
        return dt.date.fromisoformat(s)  # the common case, fast
    m = _DATE_RE.fullmatch(s)
    if m is None:
        raise ValueError(value)
    return dt.date(int(m[1]), int(m[2]), int(m[3]))


def _format_of(format: str | None, name: str) -> str:
    if format is not None:
        if format not in ("csv", "json", "jsonl"):
            raise ExportRejected(f"unknown format {format!r} (use csv, json or jsonl)", file=name)
        return format
    lowered = name.lower()
    for ext, fmt in _EXTENSIONS.items():
        if lowered.endswith(ext):
            return fmt
    raise ExportRejected("cannot tell the format from the file name; set sources.hris.format", file=name)


def _decode(data: bytes, name: str) -> str:
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise ExportRejected(
            f"not UTF-8: invalid byte 0x{data[offset]:02x} at byte offset {offset} (line {line})", file=name
        ) from None


def _delimiter(text: str) -> str:
    """The CSV delimiter: a comma, unless the header line has none and is split by ';' or a tab
    (a spreadsheet saved with a European locale): issue 17, that read as "missing required columns"."""
    first = next((line for line in text[:65536].split("\n") if line.strip()), "")
    if "," in first:
        return ","
    counts = {d: first.count(d) for d in (";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_header(reader: Iterator[list[str]], name: str) -> tuple[list[str], int]:
    """The header (first non-blank record) and its row number."""
    rownum = 0
    try:
        for header in reader:
            rownum += 1
            if header:
                return [h.strip() for h in header], rownum
    except csv.Error as e:
        raise ExportRejected(f"malformed CSV header: {e}", file=name) from None
    return [], rownum


def _json_records(
    text: str, name: str, fmt: str, prof: Profile, pre: dict[int, _RowError]
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    items: list[tuple[int, Any]] = []
    if fmt == "jsonl":
        # Only \n ends a record: str.splitlines would also split on U+2028 or \x1c inside a name.
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    items.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    # A line we cannot read could be anyone: losing them silently would make them
                    # look like a leaver, so the whole export goes.
                    raise ExportRejected(f"invalid JSON on line {lineno}: {e.msg}", file=name) from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ExportRejected(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", file=name) from None
        if isinstance(doc, dict):
            # Workday RaaS wraps rows in Report_Entry, BambooHR custom reports in employees.
            for key in ("Report_Entry", "employees"):
                if isinstance(doc.get(key), list):
                    doc = doc[key]
                    break
        if not isinstance(doc, list):
            raise ExportRejected(
                'expected a list of objects, {"Report_Entry": [...]} or {"employees": [...]}', file=name
            )
        items = list(enumerate(doc, start=1))
    header: dict[str, None] = {}  # ordered union: Workday omits keys whose value is empty
    for _, item in items:
        if isinstance(item, dict):
            header.update(dict.fromkeys(item))
    columns = list(header)
    mapped = {c: f for f, cands in prof.columns.items() for c in cands}

    def rows() -> Iterator[tuple[int, list[str]]]:
        for n, item in items:
            if not isinstance(item, dict):
                pre[n] = _RowError("(row)", f"expected an object, found {type(item).__name__}")
                yield n, [""] * len(columns)
                continue
            row = []
            for c in columns:
                v = item.get(c)
                if isinstance(v, str):
                    row.append(v)
                elif v is None:
                    row.append("")
                elif isinstance(v, bool):
                    row.append("true" if v else "false")
                elif isinstance(v, int | float):
                    row.append(str(v))
                else:
                    if c in mapped and n not in pre:
                        pre[n] = _RowError(mapped[c], f"column {c} holds a {type(v).__name__}, expected text")
                    row.append(json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
            yield n, row

    return columns, rows()


def _find(header: list[str], candidates: tuple[str, ...]) -> int | None:
    for c in candidates:
        if c in header:
            return header.index(c)
    folded = [h.casefold() for h in header]
    for c in candidates:
        if c.casefold() in folded:
            return folded.index(c.casefold())
    return None


class _Parser:
    """One export's pass: map the header once, then a tight loop over rows."""

    def __init__(
        self,
        name: str,
        header: list[str],
        prof: Profile,
        known: Mapping[str, str] | None,
        pre: dict[int, _RowError],
        csv_mode: bool,
        delimiter: str = ",",
    ) -> None:
        self.name, self.header, self.prof, self.known = name, header, prof, known
        self.pre, self.csv_mode, self.delimiter = pre, csv_mode, delimiter
        if not header:
            raise ExportRejected("no header row and no data rows", file=name)
        seen: set[str] = set()
        for h in header:
            if h and h in seen:
                raise ExportRejected(f"column {h!r} appears twice in the header", file=name)
            seen.add(h)
        self.index: dict[str, int] = {}
        missing: list[str] = []
        for canonical, candidates in prof.columns.items():
            i = _find(header, candidates)
            if i is not None:
                self.index[canonical] = i
            elif canonical in REQUIRED_FIELDS or canonical in prof.explicit:
                expected = " or ".join(repr(c) for c in candidates)
                missing.append(f"{canonical} (expected column {expected})")
        if missing:
            raise ExportRejected("missing required columns: " + "; ".join(missing), file=name)
        used = set(self.index.values())
        # Person's positional fields after employee_id and status, read in one C call; a field
        # the export lacks reads the '' appended to each row at index len(header).
        order = _PERSON_ORDER[2:-1]
        self.getter = operator.itemgetter(*(self.index.get(f, len(header)) for f in order))
        self.date_fields = [(order.index(f), f) for f in _DATE_FIELDS]
        self.email_pos = order.index("work_email") if "work_email" in self.index else None
        self.extra_fields = [(h, i) for i, h in enumerate(header) if i not in used and h]
        self.key = hashlib.blake2b(
            _HASH_VERSION + prof.fingerprint() + _SEP.join(header).encode(), digest_size=64
        ).digest()
        # CSV lines: the same inputs and the delimiter, as blake2b's salt and personalisation
        # (free, unlike a key: no extra block per line). One C call per line.
        ctx = hashlib.blake2b(LINE_VERSION + _SEP.encode() + delimiter.encode() + _SEP.encode()
                              + prof.fingerprint() + _SEP.join(header).encode(), digest_size=32).digest()
        self.line_hash: Callable[[bytes], Any] = partial(hashlib.blake2b, digest_size=16, salt=ctx[:16],
                                                         person=ctx[16:])
        self.problems: dict[int, Quarantined] = {}
        # Departments, titles, managers, locations, names and dates repeat across 100k people:
        # each distinct text is kept as one object (about 60 bytes a field a person otherwise,
        # a third of what a first import holds per person while it is planned and saved).
        self.shared: dict[str, str] = {}
        self.dates: dict[str, dt.date | None] = {}

    def _quarantine(self, row: int, fieldname: str, message: str, eid: str | None,
                    values: list[str] | None = None) -> None:
        if row not in self.problems:  # the first problem found names the row
            name = email = ""
            if values is not None:
                name, email = self._who(values)
            self.problems[row] = Quarantined(self.name, row, fieldname, message, eid or None, name, email)

    def _who(self, values: list[str]) -> tuple[str, str]:
        def cell(f: str) -> str:
            i = self.index.get(f)
            return values[i].strip() if i is not None and i < len(values) else ""

        first = cell("preferred_name") or cell("first_name")
        return " ".join(x for x in (first, cell("last_name")) if x), cell("work_email")

    def run(self, records: Iterable[tuple[int, list[str]]]) -> ParsedExport:
        ncols = len(self.header)
        id_i, st_i = self.index["employee_id"], self.index["status"]
        em_i = self.index.get("work_email")
        vocab, known, pre = self.prof.status_values, self.known, self.pre
        keyed = hashlib.blake2b(digest_size=16, key=self.key)
        sep, terminated = _SEP, Status.TERMINATED
        status_cache: dict[str, Status | None] = {}
        # Plain lists in the loop; duplicates are looked for once at the end (cheaper than
        # two dict probes per row, and duplicates are rare).
        ids: list[str] = []
        rownums: list[int] = []
        emails: list[str] = []  # non-terminated rows only (a conversion reuses the address)
        email_at: list[int] = []  # index into ids/rownums
        people: list[tuple[int, Person]] = []
        hashes: dict[str, str] = {}
        unchanged: list[int] = []
        short_row = -1
        for rownum, row in records:
            if len(row) != ncols:
                if not row:
                    continue  # a blank line is no record
                eid = row[id_i].strip() if id_i < len(row) else ""
                ids.append(eid)
                rownums.append(rownum)
                if len(row) < ncols:
                    short_row = rownum
                self._quarantine(rownum, "(row)", f"has {len(row)} fields, the header has {ncols}", eid, row)
                continue
            eid = row[id_i].strip()
            ids.append(eid)
            rownums.append(rownum)
            raw_status = row[st_i]
            if raw_status in status_cache:
                status = status_cache[raw_status]
            else:  # a handful of distinct values per export: normalise each once
                status = status_cache[raw_status] = vocab.get(raw_status.strip().casefold())
            if em_i is not None and status is not terminated:
                email = row[em_i].strip().lower()
                if email:
                    emails.append(email)
                    email_at.append(len(ids) - 1)
            hasher = keyed.copy()  # cheaper than a new keyed blake2b per row
            hasher.update(sep.join(row).encode())
            digest = hasher.hexdigest()
            if known is not None and known.get(eid) == digest and not (pre and rownum in pre):
                hashes[eid] = digest
                unchanged.append(rownum)
                continue
            try:
                if pre and rownum in pre:
                    raise pre[rownum]
                people.append((rownum, self._person(row, eid, status, raw_status)))
                hashes[eid] = digest
            except _RowError as e:
                self._quarantine(rownum, e.field, e.message, eid, row)
        if not ids:
            raise ExportRejected("no data rows", file=self.name)
        if self.csv_mode and short_row == rownums[-1]:
            raise ExportRejected(
                f"the last row ({short_row}) has fewer fields than the header: the file looks cut off", file=self.name
            )
        self._duplicates(ids, rownums, emails, email_at, hashes)
        return self._result(people, unchanged, {}, hashes, rows=len(ids), unchanged_extra=0)

    def _result(self, people: list[tuple[int, Person]], unchanged: list[int], kept: Mapping[int, list[str]],
                hashes: dict[str, str], *, rows: int, unchanged_extra: int) -> ParsedExport:
        """The export, rows set aside taken out of it. A duplicate's row was read fine: its
        problem is named after it (from the person, or from the values `kept` of a known line)."""
        problems = self.problems
        if problems:
            for rownum, p in people:
                q = problems.get(rownum)
                if q is not None and not q.name:
                    problems[rownum] = replace(q, name=" ".join(x for x in (p.preferred_name or p.first_name,
                                                                             p.last_name) if x),
                                               email=p.work_email)
            for rownum, values in kept.items():
                q = problems.get(rownum)
                if q is not None and not q.name:
                    who, email = self._who(values)
                    problems[rownum] = replace(q, name=who, email=email)
            people = [p for p in people if p[0] not in problems]
            unchanged = [r for r in unchanged if r not in problems]
        quarantined = sorted(problems.values(), key=lambda q: q.row)
        return ParsedExport(
            file=self.name,
            checksum="",
            columns=tuple(self.header),
            row_count=rows,
            people=[p for _, p in people],
            row_hashes=hashes,
            unchanged=len(unchanged) + unchanged_extra,
            quarantined=quarantined,
            quarantined_ids={q.employee_id for q in quarantined if q.employee_id},
        )

    def run_lines(self, lines: CsvLines, reader: Any, header_row: int) -> ParsedExport:
        """The CSV pass. Every line after the header is hashed first (raw bytes, C calls only);
        a line whose hash is a known row hash is that person's unchanged record: it is taken
        without csv.reader. Every other line, and each line a multi-line record spans, is read
        by csv.reader as `run` reads a row. The result is the one reading every line would
        give (tests/unit/test_hris_lines.py), the unchanged rows' names aside: those are set
        aside only for a duplicate, and then named from their line.

        Why a known line needs no reading: its text is, byte for byte, a record read before
        under the same header, delimiter and profile (all in the hash), and csv.reader reads
        the same text from the start of a record the same way. The start of a record is known
        at every step: after the header, after a known line (one whole record) and after
        what csv.reader read."""
        ncols = len(self.header)
        id_i, st_i = self.index["employee_id"], self.index["status"]
        em_i = self.index.get("work_email")
        vocab, known = self.prof.status_values, self.known
        line_hash, hexdigest = self.line_hash, hashlib.blake2b.hexdigest
        terminated = Status.TERMINATED
        status_cache: dict[str, Status | None] = {}
        raw, n = lines.raw, lines.n
        start = reader.line_num  # csv.reader read the header from line 0: this line is a record's start
        # Per line from `start`: (employee_id, row hash) of the unchanged record it is, or None.
        hits: list[tuple[str, str] | None] | None = None
        misses: Iterable[int] = range(start, n)
        # Known entries no line is: those that were not found, and those found on a line that
        # turned out to be inside a multi-line record.
        unmatched: list[tuple[str, str]] = []
        whole = False
        if known and _FAST_LINES and start < n:
            # Known row hashes by the line digest they begin with, each taken by the first line
            # that has it (pop): a line there twice is read the second time, and its id counts
            # twice like any other.
            rev = dict(zip(map(DIGEST_OF, known.values()), known.items(), strict=True))
            whole = len(rev) == len(known)  # (no two hashes with one digest: each entry is in rev)
            hits = list(map(rev.pop, map(hexdigest, map(line_hash, islice(raw, start, None))), repeat(None)))
            unmatched = list(rev.values()) if whole else []
            del rev
            misses = compress(range(start, n), map(operator.not_, hits))
        # The records csv.reader read, as in `run`.
        ids: list[str] = []
        rownums: list[int] = []
        emails: list[str] = []  # non-terminated rows only
        tags: list[str] = []  # email_tag of each of `emails`
        email_at: list[int] = []  # index into ids/rownums
        people: list[tuple[int, Person]] = []
        hashes: dict[str, str] = {}
        unchanged: list[int] = []
        kept: dict[int, list[str]] = {}  # unchanged records read all the same (multi-line): named if set aside
        runs: list[tuple[int, int, int]] = []  # (first line, end line, row number of the first) of known lines
        short_row = last_row = -1
        rownum = header_row
        pos = start  # the next line not taken: always a record's start
        rd: Any = reader
        rd_start = 0  # the line rd began at (rd.line_num counts from there)
        try:
            for i in misses:
                if i < pos:
                    continue  # inside the multi-line record just read
                if i > pos:  # lines pos..i-1 are known: one record each
                    runs.append((pos, i, rownum + 1))
                    rownum += i - pos
                    last_row, pos, rd = rownum, i, None
                if rd is None:
                    rd, rd_start = csv.reader(lines.feed(i), strict=True, delimiter=self.delimiter), i
                row = next(rd, None)
                if row is None:  # cannot be (line i is there): never count what was not read
                    raise ExportRejected(f"could not read the record at line {i + 1}", file=self.name)
                end = rd_start + rd.line_num
                rownum += 1
                if end == i + 1:
                    digest = hexdigest(line_hash(raw[i]))
                else:  # a record spanning lines: none of them is a record of its own
                    digest = hexdigest(line_hash(lines.record(i, end)))
                    if hits is not None:
                        for j in range(i + 1 - start, end - start):
                            if hits[j] is not None:
                                unmatched.append(hits[j])  # type: ignore[arg-type]
                                hits[j] = None
                pos = end
                if len(row) != ncols:
                    if not row:
                        continue  # a blank line is no record
                    eid = row[id_i].strip() if id_i < len(row) else ""
                    ids.append(eid)
                    rownums.append(rownum)
                    last_row = rownum
                    if len(row) < ncols:
                        short_row = rownum
                    self._quarantine(rownum, "(row)", f"has {len(row)} fields, the header has {ncols}", eid, row)
                    continue
                eid = row[id_i].strip()
                ids.append(eid)
                rownums.append(rownum)
                last_row = rownum
                raw_status = row[st_i]
                if raw_status in status_cache:
                    status = status_cache[raw_status]
                else:  # a handful of distinct values per export: normalise each once
                    status = status_cache[raw_status] = vocab.get(raw_status.strip().casefold())
                tag = ""
                if em_i is not None and status is not terminated:
                    email = row[em_i].strip().lower()
                    if email:
                        tag = email_tag(email)
                        emails.append(email)
                        tags.append(tag)
                        email_at.append(len(ids) - 1)
                row_hash = digest + tag
                if known is not None and known.get(eid) == row_hash:
                    hashes[eid] = row_hash
                    unchanged.append(rownum)
                    kept[rownum] = row
                    continue
                try:
                    people.append((rownum, self._person(row, eid, status, raw_status)))
                    hashes[eid] = row_hash
                except _RowError as e:
                    self._quarantine(rownum, e.field, e.message, eid, row)
        except csv.Error as e:
            line = rd_start + rd.line_num if rd is not None else pos
            raise ExportRejected(
                f"malformed CSV near line {line}: {e}; the file may be cut off", file=self.name
            ) from None
        if pos < n:
            runs.append((pos, n, rownum + 1))
            rownum += n - pos
            last_row = rownum
        n_known = len(hits) - hits.count(None) if hits is not None else 0
        if not ids and not n_known:
            raise ExportRejected("no data rows", file=self.name)
        if short_row == last_row:
            raise ExportRejected(
                f"the last row ({short_row}) has fewer fields than the header: the file looks cut off", file=self.name
            )
        set_aside_known = 0
        if not n_known:
            self._duplicates(ids, rownums, emails, email_at, hashes)
        else:
            assert hits is not None and known is not None
            if whole and len(unmatched) < n_known:  # (a poll: the known entries, less the few not there)
                known_hashes = dict(known)
                for eid, _ in unmatched:
                    del known_hashes[eid]
            else:  # (say, after an upgrade: hardly a line known)
                known_hashes = dict(filter(None, hits))
            # Duplicates over the whole export, from sets: the ids and e-mail tags seen twice.
            twice: set[str] = set()
            if len(set(ids)) < len(ids):
                twice.update(e for e, c in Counter(ids).items() if c > 1)
            twice.update(known_hashes.keys() & set(ids))
            known_tags = list(filter(None, map(TAG_OF, known_hashes.values())))
            shared = set(tags)
            shared.update(known_tags)
            if len(shared) < len(tags) + len(known_tags):
                shared = {t for t, c in Counter([*tags, *known_tags]).items() if c > 1}
            else:
                shared = set()
            known_hashes.update(hashes)
            hashes = known_hashes
            if twice or shared:
                set_aside_known = self._duplicates_with_known(
                    lines, runs, hits, start, twice, shared, ids, rownums, emails, tags, email_at, hashes)
        return self._result(people, unchanged, kept, hashes, rows=len(ids) + n_known,
                            unchanged_extra=n_known - set_aside_known)

    def _duplicates_with_known(
        self, lines: CsvLines, runs: list[tuple[int, int, int]], hits: list[tuple[str, str] | None], start: int,
        twice: set[str], shared: set[str], ids: list[str], rownums: list[int], emails: list[str], tags: list[str],
        email_at: list[int], hashes: dict[str, str],
    ) -> int:
        """`_duplicates` over the records read and the known lines whose id is there twice or
        whose e-mail tag is shared (tags are short: a shared tag need not be a shared address,
        so those lines' addresses are read). Returns how many known lines were set aside;
        they are named from their line."""
        known = self.known
        assert known is not None
        wanted = {(e, known[e]) for e in twice if e in known}
        wanted.update((e, h) for e, h in hashes.items() if TAG_OF(h) in shared)
        em_i = self.index.get("work_email")
        address = dict(zip(email_at, emails, strict=True))
        # The records in row order: (row, employee_id, e-mail to compare or None, known line or -1).
        records: list[tuple[int, str, str | None, int]] = [
            (r, eid, address.get(k), -1) for k, (r, eid) in enumerate(zip(rownums, ids, strict=True))]
        firsts = [first for first, _, _ in runs]
        for j in compress(range(start, start + len(hits)), map(wanted.__contains__, hits)):
            first, _, row = runs[bisect.bisect_right(firsts, j) - 1]
            hit = hits[j - start]
            assert hit is not None
            email = None
            if em_i is not None and TAG_OF(hit[1]) in shared:
                email = self._line_values(lines, j)[em_i].strip().lower()
            records.append((row + j - first, hit[0], email, j))
        records.sort(key=lambda rec: rec[0])
        compared = [(k, rec[2]) for k, rec in enumerate(records) if rec[2] is not None]
        self._duplicates([rec[1] for rec in records], [rec[0] for rec in records], [e for _, e in compared],
                         [k for k, _ in compared], hashes)
        set_aside = 0
        for r, _, _, j in records:
            q = self.problems.get(r)
            if j >= 0 and q is not None:
                set_aside += 1
                if not q.name:
                    name, email = self._who(self._line_values(lines, j))
                    self.problems[r] = replace(q, name=name, email=email)
        return set_aside

    def _line_values(self, lines: CsvLines, i: int) -> list[str]:
        """The cells of line i, a whole record."""
        return next(csv.reader([lines.text(i)], strict=True, delimiter=self.delimiter))

    def _duplicates(
        self, ids: list[str], rownums: list[int], emails: list[str], email_at: list[int], hashes: dict[str, str]
    ) -> None:
        """Quarantine every row sharing an employee_id, and every non-terminated row sharing
        a work_email; their ids leave `hashes` so nothing downstream treats them as valid."""
        if len(set(ids)) < len(ids):
            by_id: dict[str, list[int]] = {}
            for eid, r in zip(ids, rownums, strict=True):
                if eid:
                    by_id.setdefault(eid, []).append(r)
            for eid, rows in by_id.items():
                if len(rows) > 1:
                    listed = ", ".join(map(str, rows))
                    hashes.pop(eid, None)
                    for r in rows:
                        self._quarantine(r, "employee_id", f"employee_id {eid} appears in rows {listed}", eid)
        if len(set(emails)) < len(emails):
            by_email: dict[str, list[int]] = {}
            for email, at in zip(emails, email_at, strict=True):
                by_email.setdefault(email, []).append(at)
            for group in by_email.values():
                if len(group) > 1:
                    listed = ", ".join(f"{rownums[at]} ({ids[at] or 'no id'})" for at in group)
                    for at in group:
                        hashes.pop(ids[at], None)
                        self._quarantine(
                            rownums[at], "work_email", f"the same work_email is on rows {listed}, none terminated",
                            ids[at],
                        )

    def _person(self, row: list[str], eid: str, status: Status | None, raw_status: str) -> Person:
        if not eid:
            raise _RowError("employee_id", "is empty")
        if status is None:
            raise _RowError(
                "status", f"unknown status {raw_status.strip()!r} (map it with sources.hris.status_values)"
            )
        row.append("")
        stripped = list(map(str.strip, self.getter(row)))
        values: list[Any] = list(map(self.shared.setdefault, stripped, stripped))
        dates = self.dates
        for pos, f in self.date_fields:
            text = values[pos]
            if text in dates:
                values[pos] = dates[text]
                continue
            try:
                day = parse_date(text)
            except ValueError:
                raise _RowError(f, f"not a date: {text!r} (expected YYYY-MM-DD)") from None
            if day is not None and (why := date_out_of_range(day)):
                raise _RowError(f, why)
            values[pos] = dates[text] = day
        if self.email_pos is not None and (email := values[self.email_pos]) and not _EMAIL_RE.match(email):
            # An address the apps will refuse fails here, as a row HR can fix, not later as a dead letter.
            raise _RowError("work_email", f"not an e-mail address: {email!r}")
        extra = {h: v for h, i in self.extra_fields if (v := row[i].strip())} if self.extra_fields else None
        values.append(extra or _EMPTY_EXTRA)
        return Person(eid, status, *values)
