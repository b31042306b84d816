"""Parsing the DNS server's upstream addresses."""

import pytest
from podnet.dns.config import parse_upstream


@pytest.mark.parametrize(("text", "parsed"), [
    ("8.8.8.8", ("8.8.8.8", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:db8::1]", ("2001:db8::1", 53)),
    ("2001:db8::1", ("2001:db8::1", 53)),
])
def test_upstreams(text, parsed):
    assert parse_upstream(text) == parsed


@pytest.mark.parametrize("text", ["dns.google", "127.0.0.1:0", "127.0.0.1:99999", "[::1]x", "1.2.3.4:port"])
def test_bad_upstreams(text):
    with pytest.raises(ValueError):
        parse_upstream(text)
