"""A GET from the test's host, as a person's browser or curl would do it, whatever the answer."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(status, body); (0, the reason) when no HTTP answer came."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)
