"""`pods/exec` and `pods/log`: streams the API server relays to the kubelet API of the pod's node, as
kube-apiserver proxies them to the kubelet (it never reaches into a pod by itself).

The steps are kube-apiserver's: authorize the subresource (exec is `create` on `pods/exec`, whatever the
HTTP method; log is `get` on `pods/log`), find the pod, pick the container (the only one, or the one
named, which must exist), find the node's kubelet endpoint (its InternalIP and
`status.daemonEndpoints.kubeletEndpoint.Port`), then relay over TLS, presenting the API server's kubelet
client certificate and verifying the kubelet's against the cluster CA. Exec is a WebSocket whose messages pass
through untouched in both directions (the channel protocol is the kubelet's business, negotiated end to
end); a log is an HTTP body streamed as it comes.

A failed WebSocket handshake makes kubectl retry with SPDY; the retry meets the same checks and so the
same `Status`, which kubectl prints. SPDY itself is not spoken.

Another stream builds its route on the steps here (`add_routes` returns them, as port-forward uses them):
`authorized_pod`, `container_of`, `require_started`, `kubelet_url` and `relay_websocket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType, web
from podnet.apiserver import status
from podnet.apiserver.codec import from_storage
from podnet.apiserver.config import ApiServerConfig
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, Resources
from podnet.apiserver.rbac.authorizer import Attributes
from podnet.apiserver.status import ApiError

from podnet.api.kinds import Kind, lookup
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Query parameters each subresource hands on to the kubelet.
EXEC_PARAMETERS = ("command", "stdin", "stdout", "stderr", "tty")
LOG_PARAMETERS = ("follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes")
CLIENT_KEY = web.AppKey("kubelet_client", aiohttp.ClientSession)


def subresources(kind: Kind) -> list[dict]:
    """The discovery entries of the streams of `kind` (pods only)."""
    if kind.plural != "pods":
        return []
    return [
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    ]


def forbidden(user: str, verb: str, subresource: str, name: str, namespace: str) -> ApiError:
    message = (f'pods "{name}" is forbidden: User "{user}" cannot {verb} resource "pods/{subresource}" '
               f'in API group "" in the namespace "{namespace}"')
    return ApiError(status.status(403, "Forbidden", message, {"name": name, "kind": "pods"}))


class Streams:
    def __init__(self, resources: Resources, scheme: str):
        self.resources = resources
        self.pods = lookup("pods")
        self.nodes = lookup("nodes")
        self.scheme = scheme

    async def authorized_pod(self, request: web.Request, verb: str, subresource: str) -> dict:
        """The pod of the request's path, once `verb` on `pods/<subresource>` is allowed to its user."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        request[VERB_KEY], request[RESOURCE_KEY] = verb, "pods"
        user = request[USER_KEY]
        if not self.resources.allowed(user, Attributes(verb, namespace, "", "pods", subresource, name)).allowed:
            raise forbidden(user.name, verb, subresource, name, namespace)
        kv = await self.resources._current(self.pods, namespace, name)
        return from_storage(kv.value, kv.mod_revision)

    @staticmethod
    def container_of(pod: dict, request: web.Request) -> str:
        """`?container=`, which the pod must have; without it the pod's only container."""
        name = pod["metadata"]["name"]
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container", "")
        if not container:
            if len(containers) != 1:
                raise status.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]")
            return containers[0]
        if container not in containers:
            raise status.bad_request(f"container {container} is not valid for pod {name}")
        return container

    @staticmethod
    def require_started(pod: dict, container: str) -> None:
        meta = pod["metadata"]
        if not (pod.get("spec") or {}).get("nodeName"):
            raise status.bad_request(f"pod {meta['name']} does not have a host assigned")
        if ((pod.get("status") or {}).get("phase") or "Pending") == "Pending":
            raise status.bad_request(f'container "{container}" in pod "{meta["name"]}" is waiting to start: ContainerCreating')

    async def kubelet_url(self, pod: dict, path: tuple[str, ...], parameters: tuple[str, ...], request: web.Request) -> str:
        """The URL on the kubelet of the pod's node (its InternalIP and kubelet port) of `path` (segments,
        quoted here), with the request's query `parameters`."""
        node_name = (pod.get("spec") or {}).get("nodeName")
        kv = await self.resources._current(self.nodes, None, node_name)
        node = from_storage(kv.value, kv.mod_revision).get("status") or {}
        address = next((a.get("address") for a in node.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        port = ((node.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not port:
            raise status.unavailable(f"node {node_name} publishes no kubelet endpoint (the agent serves no kubelet API)")
        query = [(key, value) for key in parameters for value in request.query.getall(key, [])]
        segments = "/".join(quote(part, safe="") for part in path)
        encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        return f"{self.scheme}://{address}:{port}/{segments}" + (f"?{encoded}" if encoded else "")

    async def _kubelet_failure(self, response: aiohttp.ClientResponse) -> ApiError:
        """The kubelet's Status passed on; anything else reported as the proxy's failure."""
        if response.status == 403:  # the client's credentials were fine: ours were not
            return status.internal("error dialing backend: the kubelet refused the API server's client certificate "
                                   "(--kubelet-client-certificate)")
        try:
            body = await response.json(content_type=None)
        except (ValueError, aiohttp.ClientError):
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            return ApiError(body)
        return status.internal(f"error dialing backend: the kubelet answered {response.status}")

    async def _kubelet_refusal(self, session: aiohttp.ClientSession, url: str) -> ApiError | None:
        """What the kubelet says of `url` asked without an upgrade: its refusal as a Status, if it refuses."""
        try:
            async with session.get(url) as response:
                return await self._kubelet_failure(response) if response.status >= 400 else None
        except aiohttp.ClientError as exc:
            return status.internal(f"error dialing backend: {exc}")

    async def relay_websocket(self, request: web.Request, url: str) -> web.StreamResponse:
        """Opens a WebSocket to the kubelet at `url` offering the client's subprotocols, then accepts the
        client's with the one the kubelet chose and passes messages across until either side closes."""
        session = request.app[CLIENT_KEY]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            # kubectl retries a refused WebSocket with SPDY: the retry meets the kubelet's refusal again.
            raise await self._kubelet_refusal(session, url) or status.bad_request(
                "Upgrade request required: this server streams over WebSocket, SPDY is not supported")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        try:
            upstream = await session.ws_connect(url, protocols=offered, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            # The handshake's answer carries no body here; the same request without the upgrade gets the Status.
            refusal = await self._kubelet_refusal(session, url)
            raise refusal or status.internal(f"error dialing backend: the kubelet refused the upgrade ({exc.status})") from None
        except aiohttp.ClientError as exc:
            raise status.internal(f"error dialing backend: {exc}") from None
        async with upstream:
            downstream = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (), autoping=True)
            await downstream.prepare(request)
            await _relay(downstream, upstream)
        return downstream

    # ---- exec --------------------------------------------------------------------------------------

    async def exec_(self, request: web.Request) -> web.StreamResponse:
        pod = await self.authorized_pod(request, "create", "exec")
        container = self.container_of(pod, request)
        if not request.query.getall("command", []):
            raise status.bad_request("you must specify at least 1 command")
        self.require_started(pod, container)
        meta = pod["metadata"]
        url = await self.kubelet_url(pod, ("exec", meta["namespace"], meta["name"], container), EXEC_PARAMETERS, request)
        return await self.relay_websocket(request, url)

    # ---- log ---------------------------------------------------------------------------------------

    async def log(self, request: web.Request) -> web.StreamResponse:
        pod = await self.authorized_pod(request, "get", "log")
        container = self.container_of(pod, request)
        if not (pod.get("spec") or {}).get("nodeName"):
            return web.Response(body=b"", content_type="text/plain")  # as kube-apiserver: nothing to show yet
        self.require_started(pod, container)
        meta = pod["metadata"]
        path = ("containerLogs", meta["namespace"], meta["name"], container)
        url = await self.kubelet_url(pod, path, LOG_PARAMETERS, request)
        session = request.app[CLIENT_KEY]
        try:
            upstream = await session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        except aiohttp.ClientError as exc:
            raise status.internal(f"error dialing backend: {exc}") from None
        async with upstream:
            if upstream.status != 200:
                raise await self._kubelet_failure(upstream)
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientPayloadError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
        return response


async def _relay(downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Passes every data message across both ways until either side closes; then closes the other with
    the same code."""

    async def pump(source, sink) -> None:
        async for message in source:
            if message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            else:
                break

    down = asyncio.ensure_future(pump(downstream, upstream))
    up = asyncio.ensure_future(pump(upstream, downstream))
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(down, up)
        with contextlib.suppress(ConnectionError):
            await downstream.close(code=_closing_code(upstream.close_code))
            await upstream.close(code=_closing_code(downstream.close_code))


def _closing_code(received: int | None) -> int:
    """The code to close one side with after the other closed with `received`. Codes that only say what
    happened to a connection (1005 none given, 1006 dropped, 1015 TLS failed) may not be sent: a dropped
    peer is an unexpected condition (1011) for the other side."""
    if received is None or received == aiohttp.WSCloseCode.OK:
        return aiohttp.WSCloseCode.OK
    if received in (1005, 1006, 1015):
        return aiohttp.WSCloseCode.INTERNAL_ERROR
    return received


def add_routes(app: web.Application, resources: Resources, config: ApiServerConfig) -> Streams:
    """The stream subresources of pods, and the HTTP client they relay through; returns the steps, for
    other streams' routes (port-forward) to build on."""
    context = None
    if config.kubelet_client_certificate:
        context = ssl.create_default_context(cafile=config.kubelet_certificate_authority)
        context.load_cert_chain(config.kubelet_client_certificate, config.kubelet_client_key)
    streams = Streams(resources, "https" if context else "http")
    base = "/api/v1/namespaces/{namespace}/pods/{name}"
    app.router.add_get(f"{base}/exec", streams.exec_)
    app.router.add_post(f"{base}/exec", streams.exec_)
    app.router.add_get(f"{base}/log", streams.log)

    async def client(app: web.Application):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context if context else True)) as session:
            app[CLIENT_KEY] = session
            yield

    app.cleanup_ctx.append(client)
    return streams
