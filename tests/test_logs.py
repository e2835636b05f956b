"""The logging last-line defence: a Clerk secret key is masked in every format."""

from __future__ import annotations

import logging

import pytest

from clerk_sync.logs import _Formatter, redact

KEY = "sk_live_2bQwErTyUiOpAsDfGhJkLzXcVbNm"


@pytest.mark.parametrize(
    "text",
    [
        f"key {KEY} rejected",
        f"first line\n{KEY}",  # JSON escapes the newline as \n, leaving a word character before the key
        f"Authorization=Bearer%20{KEY}",
        f"x_{KEY}",
    ],
)
@pytest.mark.parametrize("as_json", [True, False])
def test_a_key_is_masked_in_json_and_text_lines(text: str, as_json: bool) -> None:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "sync.pass", None, None)
    record.fields = {"error": text}
    line = _Formatter(as_json).format(record)
    assert "2bQwErTy" not in line, line
    assert "2bQwErTy" not in redact(text)
