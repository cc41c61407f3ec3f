"""jml.jsontext.one_shot writes what the encoder's own encode() writes, byte for byte."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jml.jsontext import one_shot

ENCODERS = {
    "store (compact)": json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str),
    "audit (sorted, compact)": json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                                default=str),
    "plan --json": json.JSONEncoder(ensure_ascii=False, default=str),
    "ascii": json.JSONEncoder(),
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(),
    st.datetimes().map(lambda d: d.replace(tzinfo=dt.UTC)), st.dates(),
)
keys = st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.tuples(inner, inner), st.dictionaries(st.text(), inner, max_size=5)),
    max_leaves=30)


@pytest.mark.parametrize("name", sorted(ENCODERS))
@given(value=values)
def test_the_same_text_as_the_encoder(name: str, value: Any) -> None:
    encoder = ENCODERS[name]
    assert _outcome(one_shot(encoder), value) == _outcome(encoder.encode, value)


def _outcome(encode: Any, value: Any) -> str:
    try:
        return str(encode(value))
    except TypeError as e:  # no `default` (the ascii one): a date is refused, the same way
        return f"TypeError: {e}"


@given(value=st.dictionaries(keys, scalars, max_size=6))
def test_non_text_keys_as_the_encoder_writes_them(value: dict[Any, Any]) -> None:
    encoder = ENCODERS["store (compact)"]
    assert one_shot(encoder)(value) == encoder.encode(value)


def test_a_failed_call_leaves_nothing_behind() -> None:
    """No state between calls: after an error, the same value (shared, not circular) encodes."""
    encode = one_shot(ENCODERS["store (compact)"])
    shared = {"a": "b"}
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        encode({"x": shared, "loop": loop})
    assert encode([shared, shared]) == '[{"a":"b"},{"a":"b"}]'


def test_an_indenting_encoder_is_left_as_it_is() -> None:
    encoder = json.JSONEncoder(indent=2)
    assert one_shot(encoder) == encoder.encode
