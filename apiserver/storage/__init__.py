"""The storage backends, chosen by URL: `sqlite:///abs/path.db` or `etcd://host:port[,host:port...]`."""

from __future__ import annotations

from urllib.parse import urlsplit

from podnet.apiserver.storage.base import Store


def open_store(url: str, **options: object) -> Store:
    """The store `url` names, not yet opened: `await store.open()` or `async with open_store(url) as store`.

    `options` go to the backend's constructor (both take `progress_interval`).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from podnet.apiserver.storage.sqlite import SqliteStore

        if parts.netloc or parts.path in ("", "/"):
            raise ValueError(f"a SQLite store URL is sqlite:///absolute/path.db, not {url!r}")
        return SqliteStore(parts.path, **options)  # type: ignore[arg-type]
    if parts.scheme == "etcd":
        from podnet.apiserver.storage.etcd import EtcdStore

        endpoints = [e for e in parts.netloc.split(",") if e]
        if not endpoints or parts.path not in ("", "/"):
            raise ValueError(f"an etcd store URL is etcd://host:port[,host:port...], not {url!r}")
        return EtcdStore(endpoints, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown store URL scheme {parts.scheme!r} in {url!r} (sqlite or etcd)")
