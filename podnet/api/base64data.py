"""Base64 as Kubernetes' `[]byte` fields decode it (`Secret.data`, `ConfigMap.binaryData`): Go's padded
standard encoding, newlines skipped, and the first bad character reported by its offset in Go's words
(`illegal base64 data at input byte 4`), which kube-apiserver passes on as the reason a body cannot be
decoded. Pure.
"""

from __future__ import annotations

import base64
import string

_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")
_NEWLINES = "\r\n"


def _skip_newlines(text: str, at: int) -> int:
    while at < len(text) and text[at] in _NEWLINES:
        at += 1
    return at


def error(text: str) -> str | None:
    """Go's `base64.StdEncoding.DecodeString` error for `text`, None when it decodes."""
    at = 0
    while True:
        taken = 0  # characters of the current 4-character quantum
        while taken < 4:
            if at == len(text):
                if taken == 0:
                    return None
                return _illegal(at - taken)
            char = text[at]
            at += 1
            if char in _ALPHABET:
                taken += 1
                continue
            if char in _NEWLINES:
                continue
            if char != "=" or taken < 2:
                return _illegal(at - 1)
            if taken == 2:  # "==" expected: the second "=" must follow, newlines aside
                at = _skip_newlines(text, at)
                if at == len(text):
                    return _illegal(len(text))
                if text[at] != "=":
                    return _illegal(at - 1)
                at += 1
            at = _skip_newlines(text, at)
            return _illegal(at) if at < len(text) else None


def _illegal(offset: int) -> str:
    return f"illegal base64 data at input byte {offset}"


def decode(text: str) -> bytes:
    """The bytes of a value that `error` accepts."""
    return base64.b64decode(text.translate({ord(c): None for c in _NEWLINES}), validate=True)


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
