"""The aiohttp side of API priority and fairness (the decisions are fairness.py's).

A middleware after authentication classifies each request by its user, holds it in its queue until the
dispatcher admits it (at most `flow_queue_wait` seconds), and frees its seat when it is answered. Refusals
are what kube-apiserver's filters send (`tooManyRequests`, an `http.Error`): 429, `Retry-After: 1` and the
plain text "Too many requests, please try again later." — not a Status, so that client-go makes of it what
it makes of kube-apiserver's: it waits that second and tries again (ten times), then reports
TooManyRequests, "the server has received too many requests and has asked us to try again later". Every
classified response carries the `X-Kubernetes-PF-FlowSchema-UID` and `X-Kubernetes-PF-PriorityLevel-UID`
headers, as kube-apiserver's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from podnet.apiserver.fairness import Classification, Dispatcher, Rejected, Ticket, classify
from podnet.apiserver.handlers import USER_KEY
from prometheus_client import CollectorRegistry, Counter, Gauge

FLOW_SCHEMA_HEADER = "X-Kubernetes-PF-FlowSchema-UID"
PRIORITY_LEVEL_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"
RETRY_AFTER_SECONDS = 1
TOO_MANY_REQUESTS = "Too many requests, please try again later."
# Requests that stream for as long as the client likes hold no seat, as kube-apiserver's long-running check.
_STREAMING_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})

_CLASSIFICATION = web.RequestKey("classification", Classification)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def is_watch(request: web.Request) -> bool:
    return request.method == "GET" and _truthy(request.query.get("watch"))


def is_streaming(request: web.Request) -> bool:
    last = request.path.rstrip("/").rpartition("/")[2]
    return last in _STREAMING_SUBRESOURCES or (last == "log" and _truthy(request.query.get("follow")))


def too_many_requests() -> web.Response:
    return web.Response(status=429, text=TOO_MANY_REQUESTS + "\n", charset="utf-8",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "X-Content-Type-Options": "nosniff"})


class FlowControl:
    def __init__(self, max_requests_inflight: int, max_watches_per_user: int, queue_wait: float,
                 registry: CollectorRegistry):
        self.dispatcher = Dispatcher(max_requests_inflight, max_watches_per_user)
        self.queue_wait = queue_wait
        self._waiters: dict[Ticket, asyncio.Future[None]] = {}
        self.rejected = Counter("apiserver_flowcontrol_rejected_requests_total",
                                "Requests refused with 429, by flow schema, priority level and reason.",
                                ["flow_schema", "priority_level", "reason"], registry=registry)
        self.waiting = Gauge("apiserver_flowcontrol_current_inqueue_requests", "Requests waiting in a queue.",
                             ["priority_level"], registry=registry)
        self.watches = Gauge("apiserver_flowcontrol_current_watches", "Open watches of non-exempt users.",
                             registry=registry)

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._add_headers)

    @staticmethod
    async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
        classification = request.get(_CLASSIFICATION)
        if classification is not None:
            response.headers[FLOW_SCHEMA_HEADER] = classification.schema.uid
            response.headers[PRIORITY_LEVEL_HEADER] = classification.level.uid

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        user = request.get(USER_KEY)
        if user is None:  # the public paths: nobody to classify
            return await handler(request)
        classification = request[_CLASSIFICATION] = classify(user)
        if is_watch(request):
            return await self._watch(request, handler, classification)
        if is_streaming(request):
            return await handler(request)
        outcome = self.dispatcher.arrive(classification)
        if isinstance(outcome, Rejected):
            return self._refuse(request, classification, outcome.reason)
        if not outcome.admitted and not await self._wait(outcome):
            return self._refuse(request, classification, "time-out")
        try:
            return await handler(request)
        finally:
            self._admit(self.dispatcher.finish(outcome))

    async def _watch(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                     classification: Classification) -> web.StreamResponse:
        refused = self.dispatcher.open_watch(classification)
        if refused is not None:
            return self._refuse(request, classification, refused.reason)
        exempt = classification.level.exempt
        if not exempt:
            self.watches.inc()
        try:
            return await handler(request)
        finally:
            self.dispatcher.close_watch(classification)
            if not exempt:
                self.watches.dec()

    async def _wait(self, ticket: Ticket) -> bool:
        """Whether the queued ticket was admitted within the wait; if not it leaves its queue."""
        level = ticket.classification.level.name
        waiter = self._waiters[ticket] = asyncio.get_running_loop().create_future()
        self.waiting.labels(level).inc()
        try:
            async with asyncio.timeout(self.queue_wait):
                await waiter
            return True
        except TimeoutError:
            self._admit(self.dispatcher.cancel(ticket))
            return False
        except asyncio.CancelledError:
            self._admit(self.dispatcher.cancel(ticket))
            raise
        finally:
            del self._waiters[ticket]
            self.waiting.labels(level).dec()

    def _admit(self, tickets: list[Ticket]) -> None:
        for ticket in tickets:
            waiter = self._waiters.get(ticket)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _refuse(self, request: web.Request, classification: Classification, reason: str) -> web.Response:
        self.rejected.labels(classification.schema.name, classification.level.name, reason).inc()
        return too_many_requests()
