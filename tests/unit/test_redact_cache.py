"""redact() keeps its results for short texts: a secret registered later still masks a text
that was redacted (and cached) before it was known; the scheme pre-check never lets through
what the pattern masks."""

from __future__ import annotations

from jml.redact import MASK, redact, redact_data, register_secret


def test_a_secret_registered_after_a_text_was_redacted_is_masked_in_it() -> None:
    text = "upstream said: s3cr3t-registered-later-xyz rejected"
    assert redact(text) == text
    register_secret("s3cr3t-registered-later-xyz")
    assert redact(text) == f"upstream said: {MASK} rejected"
    assert redact_data({"error": text}) == {"error": f"upstream said: {MASK} rejected"}


def test_the_scheme_pre_check_lets_no_credential_through() -> None:
    for text in ("Authorization: Bearer abcdef123456", "BASIC dXNlcjpwYXNzd29yZA==", "token ghp_1234567890abcdef",
                 "Bas\u0131c dXNlcjpwYXNzd29yZA==", "ToKeN ghp_1234567890abcdef"):
        assert MASK in redact(text), text
    assert redact("Basic Operations Manager") == "Basic Operations Manager"
    long = "x" * 300 + " Bearer abcdef123456"
    assert redact(long).endswith(f"Bearer {MASK}")
