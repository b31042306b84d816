"""Which API server a client asks next, when a cluster has several (`podnet up --apiservers N`).

A client keeps to the server that answered last, so that a list and the watch resumed from its
resourceVersion go to one server while it lives (every server reads the same etcd, so a resourceVersion
means the same on each, but there is no gain in moving). A server that did not answer is passed over: the
next request starts at the one after it, and the failed one comes last, in case it was the only one that
was down for a moment. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence


class ServerList:
    def __init__(self, servers: Sequence[str]):
        self.servers = tuple(dict.fromkeys(server.rstrip("/") for server in servers))
        if not self.servers:
            raise ValueError("a client needs at least one API server")
        self._current = 0

    @property
    def current(self) -> str:
        return self.servers[self._current]

    def attempts(self) -> list[str]:
        """Every server in the order to try them: the current one first, then the others in turn."""
        return [*self.servers[self._current:], *self.servers[:self._current]]

    def failed(self, server: str) -> None:
        """`server` did not answer: unless another request already moved on, the next one starts after it."""
        if server == self.current:
            self._current = (self._current + 1) % len(self.servers)

    def answered(self, server: str) -> None:
        """`server` answered: keep to it."""
        if server in self.servers:
            self._current = self.servers.index(server)
