"""
Keeping the API key out of everything the provider builds from server text.

A server (or a proxy in front of it) may echo the key back: whole, JSON-escaped, or cut short
because it trims long messages. Airflow's masker only knows the raw key, and error messages reach
trigger events, which are stored unmasked. So every API response is cleaned before it is parsed:
any run of at least :data:`MIN_ECHO` characters of the key becomes ``***``, and the text is then
scanned again after any escaping the provider itself applies (``repr``/``json``).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The shortest piece of the key that counts as an echo (shorter runs are too likely by chance).
MIN_ECHO = 8
MASK = "***"


class Redactor:
    """Finds and masks any echo (whole or cut) of one secret in text and parsed JSON."""

    __slots__ = ("_fragment", "_grams", "_secret")

    def __init__(self, secret: str) -> None:
        self._secret = secret
        size = min(MIN_ECHO, len(secret))
        grams = {secret[start : start + size] for start in range(len(secret) - size + 1)} if secret else set()
        # Any window of the key flags a possible echo; the echo is then grown to its full length.
        self._fragment = re.compile("|".join(map(re.escape, sorted(grams)))) if grams else None
        self._grams = [gram.encode() for gram in sorted(grams)]

    def __repr__(self) -> str:  # never the secret
        return "Redactor(***)"

    def text(self, text: str) -> str:
        """``text`` with every echo of the secret (whole or a piece of it) replaced by ``***``."""
        if self._fragment is None or not text:
            return text
        for form in self._escaped_forms():
            text = text.replace(form, MASK)
        pieces: list[str] = []
        position = 0
        while (found := self._fragment.search(text, position)) is not None:
            start, end = found.span()
            while end < len(text) and text[start : end + 1] in self._secret:
                end += 1
            pieces += [text[position:start], MASK]
            position = end
        return "".join(pieces) + text[position:] if pieces else text

    def body(self, content: bytes) -> bytes:
        """
        A response body safe to parse and quote: every string in it redacted.

        Fast path: a body with no piece of the key and no ``\\u`` escape (which could spell one)
        is returned as is, so a 20,000-item answer costs a few substring scans.
        """
        # Substring tests run at memory speed; a regex alternation would scan 10x slower.
        if not any(gram in content for gram in self._grams) and b"\\u" not in content:
            return content
        text = content.decode("utf-8", errors="replace")
        try:
            return json.dumps(self._walk(json.loads(text))).encode()
        except (ValueError, RecursionError):  # not JSON (or too deep to walk): clean it as text
            return self.text(text).encode()

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(key)): self._walk(item) for key, item in value.items()}
        return value

    def _escaped_forms(self) -> list[str]:
        forms = {json.dumps(self._secret)[1:-1], repr(self._secret)[1:-1], self._secret}
        return sorted(forms, key=len, reverse=True)
