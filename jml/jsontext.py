"""JSON text from an encoder whose C core is made once: `JSONEncoder.encode` makes it again on
every call (json.encoder.JSONEncoder.iterencode), which for the small documents jml writes by
the hundred thousand (an operation's detail, a person, an audit record) cost as much as the
encoding itself: 488k of them in a 100k first import (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring,
    encode_basestring_ascii,
)
from typing import Any

__all__ = ["one_shot"]


def one_shot(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, byte for byte, for an encoder without indentation.

    The C encoder is made without circular-reference marks: they would be state shared by
    every call and every thread (and left behind by a failed call), and jml's documents are
    trees; a cycle fails with RecursionError rather than ValueError."""
    if c_make_encoder is None or encoder.indent is not None:
        return encoder.encode
    make = c_make_encoder(None, encoder.default, encode_basestring_ascii if encoder.ensure_ascii
                          else encode_basestring, None, encoder.key_separator, encoder.item_separator,
                          encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)

    def encode(value: Any) -> str:
        return "".join(make(value, 0))

    return encode
