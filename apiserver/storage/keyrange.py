"""Key ranges shared by the stores: a prefix as the half-open range [prefix, prefix_end)."""

from __future__ import annotations


def prefix_end(prefix: str) -> str | None:
    """The smallest key greater than every key that starts with `prefix`; None when unbounded.

    As etcd's clientv3.GetPrefixRangeEnd: the last character that can be incremented is, and what
    follows it is dropped. UTF-8 orders as code points do, so this holds for SQLite's BINARY collation
    and for etcd's byte order alike.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            # Surrogates cannot be encoded; the code point after U+D7FF is U+E000.
            chars[-1] = chr(0xE000 if last == 0xD7FF else last + 1)
            return "".join(chars)
        chars.pop()
    return None
