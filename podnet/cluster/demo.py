"""`podnet up --demo`: applies deploy/demo/ (a zero-trust three-tier app and two tenants), waits for its pods,
then shows what the policies do with real probes, one packet's journey across nodes, the recipe's L7 step
(deploy/demo/l7/: Cilium's CRDs installed, the backend's HTTP rules, the request-level matrix), and what to
try next.

Everything shown comes from the running cluster: the matrix is probed through the node agents exactly as
`podnet matrix` probes it, and the trace is `podnet trace` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import typer
import yaml

from podnet.api import manifests
from podnet.api.ciliumpolicy import CILIUM_KINDS
from podnet.cli import pods_cmd, policy_cmd
from podnet.cli.resources import apply_object
from podnet.client import ApiClient, ApiError
from podnet.nodeagent.policy import Matrix, render_table
from podnet.nodeagent.policy.render import TruthTable
from podnet.observe import policy as observe
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import call_once

MANIFESTS = Path(__file__).resolve().parent.parent.parent / "deploy" / "demo"
APP_NAMESPACE = "shop"
TENANT_NAMESPACES = ("team-a", "team-b")
APP_PORTS = (80, 8080, 5432)
TENANT_PORTS = (80,)
POD_TIMEOUT = 90.0
# Policies reach the agents by watch, a moment after the pods run: probes are retried until the probed
# matrix agrees with what the policies say, this many times.
MATRIX_ATTEMPTS = 6
TRACE_ATTEMPTS = 8
NAME_ATTEMPTS = 10
BACKEND_URL = "http://backend:8080/hostname"
L7_MANIFESTS = MANIFESTS / "l7"
CILIUM_CRDS = MANIFESTS.parent / "crds" / "cilium.yaml"
L7_PORT = 8080
L7_REQUESTS = (("GET", "/api/items"), ("DELETE", "/api/items"))
CRD_TIMEOUT = 30.0


class DemoError(RuntimeError):
    pass


def manifest_paths(directory: Path = MANIFESTS) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def load_objects(directory: Path = MANIFESTS) -> list[dict]:
    objects: list[dict] = []
    for path in manifest_paths(directory):
        objects += manifests.load(path.read_text(), str(path))
    return objects


def replicas(objects: list[dict]) -> dict[tuple[str, str], int]:
    """(namespace, Deployment name) -> how many pods it asks for."""
    return {(obj["metadata"].get("namespace") or "default", obj["metadata"]["name"]):
            int((obj.get("spec") or {}).get("replicas", 1))
            for obj in objects if obj.get("kind") == "Deployment"}


def per_namespace(wanted: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for (namespace, _), count in wanted.items():
        totals[namespace] += count
    return dict(totals)


def workload(key: str) -> str:
    """"shop/frontend-7d9cf8b6c4-x2b1k" -> "shop/frontend": the pod's name without the ReplicaSet hash
    and the random suffix a Deployment gives it."""
    return re.sub(r"(-[a-z0-9]{5,10})?-[a-z0-9]{5}$", "", key)


def short_names(pods: dict[str, tuple[str, str]]) -> dict[str, str]:
    """"shop/frontend-7d9cf8b6c4-x2b1k" -> "shop/frontend-1": workloads numbered in order, so a matrix
    fits a terminal."""
    counts: Counter[str] = Counter()
    names = {}
    for key in pods:
        counts[workload(key)] += 1
        names[key] = f"{workload(key)}-{counts[workload(key)]}"
    return names


def renamed(table: TruthTable, names: dict[str, str]) -> TruthTable:
    return TruthTable(tuple(names[p] for p in table.pods),
                      {(names[s], names[d]): ok for (s, d), ok in table.allowed.items()})


def verdict(matrix: Matrix, src: str, dst: str, port: int) -> bool:
    """Whether `src` reached `dst` on TCP `port` (keys are "ns/pod")."""
    return matrix.table(port).allowed[src, dst]


async def wait_for_pods(client: ApiClient, wanted: dict[str, int], timeout: float = POD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        running: Counter[str] = Counter()
        for namespace in wanted:
            for pod in (await client.list("pods", namespace)).get("items") or []:
                status = pod.get("status") or {}
                if status.get("phase") == "Running" and status.get("podIP") and not pod["metadata"].get(
                        "deletionTimestamp"):
                    running[namespace] += 1
        if all(running[ns] >= n for ns, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            short = {ns: f"{running[ns]}/{n}" for ns, n in wanted.items()}
            raise DemoError(f"pods not Running after {timeout:.0f}s: {short}")
        await asyncio.sleep(0.3)


async def wait_for_endpoints(client: ApiClient, namespace: str, service: str, count: int,
                             timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        slices = await client.list("endpointslices", namespace,
                                   label_selector=f"kubernetes.io/service-name={service}")
        ready = [e for s in slices.get("items") or [] for e in s.get("endpoints") or []
                 if (e.get("conditions") or {}).get("ready", True)]
        if len(ready) >= count:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"Service {namespace}/{service} has {len(ready)} ready endpoints, not {count}")
        await asyncio.sleep(0.3)


async def probed_matrix(client: ApiClient, home: Path, namespaces: tuple[str, ...], ports: tuple[int, ...],
                        http: tuple[str, str] | None = None) -> tuple[Matrix, dict[str, tuple[str, str]], list]:
    """The probed matrix of these namespaces' pods (with `http`, of that request), once it agrees with the
    policies (pod-to-self cells aside), or the last one probed with the cells that still differ."""
    differing: list = []
    for _ in range(MATRIX_ATTEMPTS):
        found = await observe.matrices(client, observe.home_sockets(home), namespaces=namespaces, ports=ports,
                                       http=http)
        policy_cmd.warn_refused(found.refused_policies)
        pods, probed = found.pods, found.probed
        differing, _ = observe.disagreements(probed, found.static)
        if not differing:
            break
        await asyncio.sleep(1.0)
    return probed, pods, differing


def print_matrix(title: str, matrix: Matrix, pods: dict[str, tuple[str, str]], differing: list,
                 request: str | None = None) -> None:
    names = short_names(pods)
    typer.echo(f"\n{title}")
    for key, (ip, node) in pods.items():
        typer.echo(f"  {names[key]:<18} {key:<34} {ip:<13} {node}")
    legend = '"." connects, "X" does not' if request is None else '"." answered by the pod, "X" refused'
    for port, protocol in matrix.combinations():
        typer.echo(f"\n  {port}/{protocol}{' ' + request if request else ''} (rows: from, columns: to; {legend})")
        for line in render_table(renamed(matrix.table(port, protocol), names)).splitlines():
            typer.echo(f"    {line}")
    if differing:
        typer.echo(f"\n  probes and policies still disagree in {len(differing)} cells (is an agent slow?):")
        for src, dst, port, protocol, probed, _ in differing:
            typer.echo(f"    {names[src]} -> {names[dst]} {port}/{protocol}: probed "
                       f"{'reachable' if probed else 'unreachable'}")
    else:
        typer.echo(f"\n  every probe agrees with the policies ({observe.SELF_NOTE})")


def cross_node_source(pods: dict[str, tuple[str, str]]) -> str:
    """A frontend on a node without a backend (every backend it reaches is across the overlay), or any
    frontend when each of their nodes also runs a backend."""
    by_workload: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, (_, node) in pods.items():
        by_workload[workload(key)].append((key, node))
    backend_nodes = {node for _, node in by_workload[f"{APP_NAMESPACE}/backend"]}
    frontends = by_workload[f"{APP_NAMESPACE}/frontend"]
    if not frontends:
        raise DemoError("no frontend pod is Running")
    return next((key for key, node in frontends if node not in backend_nodes), frontends[0][0])


def run_trace(home: Path, source: str, destination: str) -> tuple[str, bool]:
    """`podnet trace SOURCE DESTINATION` in this process: its output, and whether it crossed nodes."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.suppress(typer.Exit):
        pods_cmd.trace(source, destination, protocol="TCP", timeout=2.0, namespace=APP_NAMESPACE, server=None,
                       token=None, kubeconfig=home / "kubeconfig", agent_socket_path=None)
    text = output.getvalue()
    return text, "vxlan-encap" in text and "answered" in text


async def show_trace(client: ApiClient, home: Path, source: str) -> None:
    service = await client.get("services", "backend", APP_NAMESPACE)
    destination = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    typer.echo(f"\nOne request's journey: $ podnet trace {source} {destination}   (the backend Service)")
    text = ""
    for _ in range(TRACE_ATTEMPTS):
        text, crossed = await asyncio.to_thread(run_trace, home, source, destination)
        if crossed:
            break
    else:
        typer.echo("  (the Service chose a backend on the same node each time: no VXLAN hop this run)")
    for line in text.splitlines():
        typer.echo(f"  {line}")


async def show_name_lookup(home: Path, pods: dict[str, tuple[str, str]], source: str) -> None:
    """A frontend asks for the backend by name: its query goes to 10.96.0.10:53, is DNATed to the cluster
    DNS's pod and allowed by shop/allow-dns, then the request goes to the Service the name resolves to."""
    namespace, name = source.split("/")
    socket = str(home / "nodes" / pods[source][1] / "agent.sock")
    typer.echo(f"\nA name from a frontend: $ podnet exec {source} -- http {BACKEND_URL}")
    result: dict = {}
    for _ in range(NAME_ATTEMPTS):  # the policies may still be reaching the agents
        result = await call_once(socket, AgentMethod.POD_HTTP, {"namespace": namespace, "pod": name, "url": BACKEND_URL,
                                                      "timeout": 3.0}, timeout=30.0)
        if result.get("ok"):
            break
        await asyncio.sleep(0.5)
    if result.get("ok"):
        body = result["body"]
        typer.echo(f"  {(body.decode(errors='replace') if isinstance(body, bytes) else str(body)).strip()}"
                   "   (backend.shop.svc.cluster.local, answered by the cluster DNS pod that shop/allow-dns allows)")
    else:
        typer.echo(f"  error: {result.get('reason') or result.get('status')}")


async def create_cilium_policy(client: ApiClient, obj: dict) -> str:
    """Creates a Cilium policy once its CRD serves it (its routes follow its creation by a moment)."""
    kind = CILIUM_KINDS[obj["kind"]]
    namespace = obj["metadata"].get("namespace") or "default"
    path = f"/apis/{kind.api_version}/namespaces/{namespace}/{kind.plural}"
    deadline = time.monotonic() + CRD_TIMEOUT
    while True:
        try:
            await client.request("POST", path, body=obj)
            return f"{kind.plural}.{kind.group}/{obj['metadata']['name']} created"
        except ApiError as exc:
            if exc.code == 409:
                return f"{kind.plural}.{kind.group}/{obj['metadata']['name']} unchanged"
            if exc.code != 404 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


async def show_l7_step(client: ApiClient, home: Path) -> None:
    """The recipe's last step: Cilium's CRDs, the backend's HTTP rules, and for each request of
    L7_REQUESTS the frontends' matrix to the backends, probed with that very request."""
    paths = [CILIUM_CRDS, *manifest_paths(L7_MANIFESTS)]
    typer.echo(f"\nL7 security the Cilium way: applying {', '.join(str(p.relative_to(MANIFESTS.parent.parent)) for p in paths)}")
    for obj in manifests.load(CILIUM_CRDS.read_text(), str(CILIUM_CRDS)):
        typer.echo(f"  {await apply_object(client, obj, None)}")
    # Read as plain YAML: the manifests' loader knows the built-in kinds only, not those of a CRD.
    for obj in (o for path in manifest_paths(L7_MANIFESTS) for o in yaml.safe_load_all(path.read_text()) if o):
        if obj.get("kind") in CILIUM_KINDS:
            typer.echo(f"  {await create_cilium_policy(client, obj)}")
        else:
            typer.echo(f"  {await apply_object(client, obj, None)}")
    for method, target in L7_REQUESTS:
        matrix, pods, differing = await probed_matrix(client, home, (APP_NAMESPACE,), (L7_PORT,), (method, target))
        print_matrix(f"{method} {target} to the backends (the L7 proxy answers what the HTTP rules refuse: 403)",
                     matrix, pods, differing, request=f"{method} {target}")


def next_steps(home: Path, pods: dict[str, tuple[str, str]], services: dict[str, str]) -> str:
    default_home = (Path.home() / ".podnet").resolve()
    env = "" if home == default_home else f"export PODNET_HOME={home} KUBECONFIG={home}/kubeconfig\n  "
    if not shutil.which("podnet"):  # run from a fresh clone's virtualenv, as `make demo` does
        env = f"export PATH={Path(sys.executable).parent}:$PATH\n  " + env
    frontend = next((k for k in pods if workload(k) == f"{APP_NAMESPACE}/frontend"), "shop/FRONTEND-POD")
    database = next((k for k in pods if workload(k) == f"{APP_NAMESPACE}/database"), "shop/DATABASE-POD")
    backend = next((k for k in pods if workload(k) == f"{APP_NAMESPACE}/backend"), "shop/BACKEND-POD")
    database_ip = services.get("database", "DATABASE-IP")
    return f"""
What to try next:
  {env}podnet get pods -A -o wide           where every pod runs, and its IP
  podnet exec {frontend} -- http http://backend:8080/api/items
      a request through the backend Service, by name: GET /api/* passes the backend's HTTP rules
  podnet flows --node NODE | grep HTTP    each request the L7 proxy judged, its answer and the rule
  podnet explain {frontend} {backend}:8080 --http "DELETE /api/items"
      the rule that answers DELETE with 403
  podnet trace {frontend} 10.96.0.10:53/udp
      a DNS query: DNATed to the cluster DNS pod (kube-system), allowed by shop/allow-dns
  podnet get pods -n kube-system -o wide   the cluster DNS's pod, on a node like any pod
  podnet exec {frontend} -- connect {database_ip}:5432 --timeout 1
      refused by policy: only the backend may reach the database
  podnet trace {frontend} {database_ip}:5432
      where it is dropped, and by which stage
  podnet explain {frontend} {database}:5432
      which policy and rule decide
  podnet matrix -n shop -p 8080 -p 5432    the matrix again, from real probes
  podnet flows --verdict denied           every connection the policies refused, node by node
  podnet status                           every process with its PID, health and restarts
Break it on purpose:
  podnet kill node-2/agent; podnet get nodes     the node turns NotReady; its pods leave the Services
  podnet start node-2/agent                      it comes back with its pods on the same IPs
  podnet kill apiserver                          traffic and DNS keep working without the control plane
  podnet start apiserver
  podnet kill dns; podnet start dns              lookups fail, then answer again
  podnet down                                    stop the cluster ("podnet clean" after a crash)"""


async def run_demo(home: Path) -> None:
    home = Path(home)
    # `podnet trace` finds the node agents' sockets under $PODNET_HOME, as in a user's shell.
    os.environ["PODNET_HOME"] = str(home)
    started = time.monotonic()
    objects = load_objects()
    typer.echo(f"\nApplying {', '.join(str(p.relative_to(MANIFESTS.parent.parent)) for p in manifest_paths())}")
    async with ApiClient.from_kubeconfig(home / "kubeconfig") as client:
        for obj in objects:
            typer.echo(f"  {await apply_object(client, obj, None)}")
        wanted = replicas(objects)
        typer.echo(f"  waiting for {sum(wanted.values())} pods to be Running", nl=False)
        try:
            await wait_for_pods(client, per_namespace(wanted))
            await wait_for_endpoints(client, APP_NAMESPACE, "backend", wanted[APP_NAMESPACE, "backend"])
        except (DemoError, ApiError) as exc:
            typer.echo("")
            raise typer.Exit(_fail(str(exc))) from None
        typer.echo(f" ... ok ({time.monotonic() - started:.1f}s)")

        app, app_pods, app_differing = await probed_matrix(client, home, (APP_NAMESPACE,), APP_PORTS)
        print_matrix("Zero-trust three-tier app (namespace shop): frontend -> backend:8080 -> database:5432, "
                     "nothing else", app, app_pods, app_differing)
        tenants, tenant_pods, tenant_differing = await probed_matrix(client, home, TENANT_NAMESPACES, TENANT_PORTS)
        print_matrix("Two tenants: each namespace reaches itself, never the other", tenants, tenant_pods,
                     tenant_differing)
        await show_trace(client, home, cross_node_source(app_pods))
        await show_name_lookup(home, app_pods, cross_node_source(app_pods))
        await show_l7_step(client, home)
        services = {s["metadata"]["name"]: s["spec"]["clusterIP"]
                    for s in (await client.list("services", APP_NAMESPACE)).get("items") or []}
    typer.echo(next_steps(home, app_pods, services))


def _fail(message: str) -> int:
    typer.echo(f"error: {message}", err=True)
    return 1
