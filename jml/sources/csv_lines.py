"""A CSV export's raw lines and the hash taken over each: the machinery of the CSV fast path.

Why a raw-line hash: on a poll most rows are unchanged. A row's hash is taken over its raw
line, before any split, every line in one pass of C calls; a line whose hash the caller
already knows is that person's unchanged record, taken with one dictionary probe and never
split by csv.reader. Only the other lines are read and converted (jml/sources/hris.py).

A CSV row hash is the line digest (DIGEST_LEN hex characters) followed by a short tag of the
row's work_email (`email_tag`, or nothing), so duplicate e-mails are still found among
lines that are never split.
"""

from __future__ import annotations

import hashlib
import io
import operator
from collections.abc import Iterable, Iterator
from itertools import compress, islice, repeat

# Bumped when a CSV row hash's input changes, so stored hashes from older versions never
# match: the raw record text, then the e-mail tag (jml-line-v2, which covers the tag's form
# too; v1 hashed the values there too, so the first poll after the upgrade re-plans everyone once).
LINE_VERSION = b"jml-line-v2"
DIGEST_LEN = 32  # hex characters of a CSV row hash; an e-mail tag (16 hex) may follow
DIGEST_OF = operator.itemgetter(slice(0, DIGEST_LEN))
TAG_OF = operator.itemgetter(slice(DIGEST_LEN, None))


def email_tag(email: str) -> str:
    """A short tag of a normalised work_email, kept after a CSV row's hash: unchanged lines are
    never split, yet their addresses count for duplicates. 64 bits: two of 500,000 addresses
    share one about once in 10^8 exports (then both lines are read and the addresses compared;
    32 bits would do that on almost every read of a large export)."""
    return hashlib.blake2b(email.encode(), digest_size=8).hexdigest()


class CsvLines:
    """A CSV export's physical lines exactly as csv.reader reads them from
    io.StringIO(text, newline=""): each ended by \r\n, \n or \r. `raw[i]` is line i's bytes
    without its line break, what a row hash is taken over; `feed(i)` gives csv.reader the
    lines from i on, and it never reads a line ahead of the record it is on (so
    reader.line_num says where a record ended).

    The file is split on its usual break (that of its first line, \r\n or \n): one C call.
    A piece holding another break (a spreadsheet cell with \n in a \r\n file, a trailing \n
    added to one, an old \r file) is split again as io.StringIO splits it."""

    __slots__ = ("_breaks", "_sep", "n", "raw")

    def __init__(self, body: bytes) -> None:
        nl = body.find(b"\n")
        crlf = nl > 0 and body[nl - 1] == 0x0D
        sep = b"\r\n" if crlf else b"\n"
        raw = body.split(sep)
        tail = raw.pop() if raw else b""  # the text after the last break: b"" if the file ends with one
        seps = len(raw)
        self._sep = sep.decode()
        self._breaks: list[str] | None = None  # each line's break, when not all are `sep`
        stray_cr = body.count(b"\r") - (seps if crlf else 0)
        stray_lf = body.count(b"\n") - seps if crlf else 0
        if tail:
            raw.append(tail)
        if not (stray_cr or stray_lf or tail):
            self.raw, self.n = raw, len(raw)
            return
        breaks = [self._sep] * len(raw)
        if tail:
            breaks[-1] = ""  # the last line has no break in the file: none is added
        if stray_cr or stray_lf:
            odd: list[int]
            if tail and tail.count(b"\r") == stray_cr and tail.count(b"\n") == stray_lf:
                odd = [len(raw) - 1]  # only in the text after the last break (say, a blank line added)
            else:
                flags: Iterable[bool] = map(operator.contains, raw, repeat(b"\r" if stray_cr else b"\n"))
                if stray_cr and stray_lf:
                    flags = map(operator.or_, flags, map(operator.contains, raw, repeat(b"\n")))
                odd = list(compress(range(len(raw)), flags))
            lines: list[bytes] = []
            brks: list[str] = []
            done = 0
            for k in odd:
                lines += raw[done:k]
                brks += breaks[done:k]
                for piece in io.StringIO(raw[k].decode() + breaks[k], newline=""):
                    line = without_break(piece)
                    lines.append(line.encode())
                    brks.append(piece[len(line):])
                done = k + 1
            raw, breaks = lines + raw[done:], brks + breaks[done:]
        self.raw, self.n, self._breaks = raw, len(raw), breaks

    def feed(self, start: int) -> Iterator[str]:
        """Lines from `start` on, each with its line break, as csv.reader wants them."""
        breaks = repeat(self._sep) if self._breaks is None else islice(self._breaks, start, None)
        return map(operator.add, map(bytes.decode, islice(self.raw, start, None)), breaks)

    def record(self, start: int, end: int) -> bytes:
        """The raw text of lines start..end-1 (one record), the breaks between them included."""
        if self._breaks is None:
            return self._sep.encode().join(self.raw[start:end])
        parts: list[bytes] = []
        for j in range(start, end - 1):
            parts += (self.raw[j], self._breaks[j].encode())
        parts.append(self.raw[end - 1])
        return b"".join(parts)

    def text(self, i: int) -> str:
        return self.raw[i].decode()


def without_break(line: str) -> str:
    """A line without the one line break (\r\n, \n or \r) that ends it, if any."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line
