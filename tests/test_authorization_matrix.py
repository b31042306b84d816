"""The authorization matrix of multi-tenancy, asked of a real API server with real credentials.

Five users, as a cluster made by `podnet up` and its demo has them: the administrator (client certificate,
group system:masters); the tenants team-a and team-b (client certificates of the cluster CA with no group,
bound to ClusterRole edit in their own namespace by deploy/demo/02-multi-tenancy.yaml); vera, who may view
everything (a ClusterRoleBinding to ClusterRole view); and the ServiceAccount team-a/robot (a bound token
from the TokenRequest API, a RoleBinding to view in team-a). Each tries every verb that discovery lists on
every resource the server serves, in team-a, in team-b and at the cluster scope (all namespaces for the
namespaced kinds), as real HTTPS requests, writes with `dryRun=All`: RBAC's 403 ("cannot <verb> resource")
or anything else (the request went past authorization). The expected table is what the same RoleBindings
give on Kubernetes 1.31, whose ClusterRoles edit and view aggregate system:aggregate-to-edit and
system:aggregate-to-view (plugin/pkg/auth/authorizer/rbac/bootstrappolicy); it is written out below.

Then the escalation attempts: a tenant binding cluster-admin to itself or writing a Role of `*`, a
namespace's admin doing the same (RBAC's escalation check), a tenant impersonating the administrator, the
ServiceAccount asking a token for another account, each refused with kube-apiserver's 403; and a Role
that grants `delete` alone does not grant `deletecollection` (nor the other way round).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support.kubectl import KubectlServer

from podnet import kubeconfig, pki

HOST = "127.0.224.10"
DEMO = Path(__file__).resolve().parent.parent / "deploy" / "demo" / "02-multi-tenancy.yaml"
READS = ("get", "list", "watch")
WRITES = ("create", "update", "patch", "delete", "deletecollection")
PROBE = "matrix-probe"  # the name every write and read of one object asks about; never stored (dry run)

# --- the expected table ----------------------------------------------------------------------------------
# R: every read verb the resource serves is allowed; W: every write verb; "": none. Per namespaced resource:
# what ClusterRole edit gives, and what ClusterRole view gives, in a namespace they are bound in (Kubernetes
# 1.31's bootstrap policy: edit writes no Endpoints, EndpointSlices, quotas, limits or ControllerRevisions —
# the control plane and the administrators write those — and no RBAC; view reads no Secret and no Lease).
#
#   resource               edit   view
NAMESPACED = {
    "configmaps":          ("RW", "R"),
    "endpoints":           ("R",  "R"),
    "events":              ("RW", "R"),
    "limitranges":         ("R",  "R"),
    "pods":                ("RW", "R"),
    "resourcequotas":      ("R",  "R"),
    "secrets":             ("RW", ""),
    "serviceaccounts":     ("RW", "R"),
    "services":            ("RW", "R"),
    "controllerrevisions": ("R",  "R"),
    "daemonsets":          ("RW", "R"),
    "deployments":         ("RW", "R"),
    "replicasets":         ("RW", "R"),
    "statefulsets":        ("RW", "R"),
    "cronjobs":            ("RW", "R"),
    "jobs":                ("RW", "R"),
    "leases":              ("RW", ""),
    "endpointslices":      ("R",  "R"),
    "ingresses":           ("RW", "R"),
    "networkpolicies":     ("RW", "R"),
    "rolebindings":        ("",   ""),
    "roles":               ("",   ""),
    # A namespace's own Namespace object (GET/PUT/PATCH/DELETE /api/v1/namespaces/<it>): view reads it.
    "namespaces":          ("R",  "R"),
}
# Subresources of the namespaced kinds, each with the verbs a client uses on it.
#
#   resource/subresource            verbs            edit   view
SUBRESOURCES = {
    "pods/log":                    (("get",),        "R",   "R"),
    "pods/exec":                   (("create",),     "W",   ""),
    "pods/status":                 (("patch",),      "",    ""),
    "services/status":             (("patch",),      "",    ""),
    "deployments/scale":           (("get", "patch"), "RW", "R"),
    "serviceaccounts/token":       (("create",),     "W",   ""),
}
# The cluster scope: every namespaced resource listed or watched across all namespaces (view bound by a
# ClusterRoleBinding reads what view reads), and the cluster-scoped resources.
#
#   resource                       cluster-wide view   every user (system:basic-user)
CLUSTER = {
    "namespaces":                  ("R", ""),
    "nodes":                       ("",  ""),
    "customresourcedefinitions":   ("",  ""),
    "flowschemas":                 ("",  ""),
    "prioritylevelconfigurations": ("",  ""),
    "ingressclasses":              ("",  ""),
    "clusterrolebindings":         ("",  ""),
    "clusterroles":                ("",  ""),
    "selfsubjectreviews":          ("W", "W"),
    "selfsubjectaccessreviews":    ("W", "W"),
    "selfsubjectrulesreviews":     ("W", "W"),
    "subjectaccessreviews":        ("",  ""),
}
# Who holds what where: the role each user has in team-a, in team-b, and at the cluster scope.
USERS = {
    #          team-a   team-b   cluster
    "admin":  ("all",  "all",  "all"),
    "team-a": ("edit", "none", "basic"),
    "team-b": ("none", "edit", "basic"),
    "vera":   ("view", "view", "view"),
    "robot":  ("view", "none", "basic"),
}


def expected_in_namespace(role: str) -> dict[str, str]:
    column = {"edit": 0, "view": 1}
    table = {resource: "RW" if role == "all" else grants[column[role]] if role in column else ""
             for resource, grants in NAMESPACED.items()}
    for resource, (verbs, *grants) in SUBRESOURCES.items():
        served = ("R" if set(verbs) & set(READS) else "") + ("W" if set(verbs) & set(WRITES) else "")
        table[resource] = served if role == "all" else grants[column[role]] if role in column else ""
    return table


def expected_at_cluster_scope(role: str, verbs: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """`verbs`: what the server serves of each resource, all of which the administrator may do."""
    table = {}
    for resource, (_, view) in NAMESPACED.items():
        if resource != "namespaces":
            table[f"{resource} (all namespaces)"] = "R" if role == "all" else view if role == "view" else ""
    for resource, (view, basic) in CLUSTER.items():
        served = ("R" if set(verbs[resource]) & set(READS) else "") + ("W" if set(verbs[resource]) & set(WRITES) else "")
        table[resource] = served if role == "all" else view if role == "view" else basic
    return table


# --- the server, its users and their requests --------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    plural: str
    group_version: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]

    def base(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"

    def path(self, namespace: str | None, name: str = "") -> str:
        where = f"/namespaces/{namespace}" if namespace and self.plural != "namespaces" else ""
        return f"{self.base()}{where}/{self.plural}" + (f"/{name}" if name else "")


@dataclass
class Server:
    kubectl: KubectlServer
    contexts: dict[str, ssl.SSLContext]
    headers: dict[str, dict[str, str]]
    resources: dict[str, Resource]


def _context(server: KubectlServer, user: str, groups: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    if user:
        pair = pki.make_client(server.ca, user, list(groups), datetime.datetime.now(datetime.UTC))
        cert, key = server.directory / f"{user}.crt", server.directory / f"{user}.key"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        key.chmod(0o600)
        context.load_cert_chain(cert, key)
    return context


def _ok(server: KubectlServer, *args: str, input: str | None = None) -> str:
    done = server.kubectl(*args, input=input)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _granted(server: KubectlServer, *can_i: str) -> None:
    """Waits until the server's RBAC cache, which follows the bindings' watch, answers yes."""
    deadline = time.monotonic() + 15
    while server.kubectl("auth", "can-i", *can_i).stdout != "yes\n":
        assert time.monotonic() < deadline, f"never granted: {can_i}"
        time.sleep(0.1)


def _discovered(server: KubectlServer) -> dict[str, Resource]:
    found = {}
    paths = ["/api/v1"] + [f"/apis/{version['groupVersion']}"
                           for group in json.loads(_ok(server, "get", "--raw", "/apis"))["groups"]
                           for version in group["versions"]]
    for path in paths:
        listing = json.loads(_ok(server, "get", "--raw", path))
        for entry in listing["resources"]:
            if "/" not in entry["name"]:
                found[entry["name"]] = Resource(entry["name"], listing["groupVersion"], entry["kind"],
                                                entry["namespaced"], tuple(entry["verbs"]))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH; the RBAC objects are made with it")
    started = KubectlServer(tmp_path_factory.mktemp("matrix"), host=HOST)
    try:
        _ok(started, "apply", "-f", str(DEMO))
        _ok(started, "create", "clusterrolebinding", "vera-views", "--clusterrole=view", "--user=vera")
        _ok(started, "create", "serviceaccount", "robot", "-n", "team-a")
        _ok(started, "create", "rolebinding", "robot-views", "--clusterrole=view", "--serviceaccount=team-a:robot",
            "-n", "team-a")
        _ok(started, "create", "rolebinding", "ada-admins", "--clusterrole=admin", "--user=ada", "-n", "team-a")
        _granted(started, "create", "roles", "-n", "team-a", "--as=ada")  # the last binding made
        token = _ok(started, "create", "token", "robot", "-n", "team-a").strip()
        contexts = {"admin": _context(started, "admin", ("system:masters",))}
        for user in ("team-a", "team-b", "vera", "ada"):
            contexts[user] = _context(started, user, ())
        contexts["robot"] = _context(started, "", ())
        headers = {user: {} for user in contexts} | {"robot": {"Authorization": f"Bearer {token}"}}
        yield Server(started, contexts, headers, _discovered(started))
    finally:
        started.stop()


def _body(resource: Resource, name: str) -> bytes:
    return json.dumps({"apiVersion": resource.group_version, "kind": resource.kind, "metadata": {"name": name}}).encode()


@dataclass(frozen=True)
class Probe:
    """A request that asks for one verb and, past authorization, changes nothing (writes are dry runs, single
    objects a name no one made, collections a selector of nothing); and the attributes it is authorized by,
    which a SelfSubjectAccessReview asks about."""
    verb: str
    method: str
    path: str
    query: dict
    body: bytes
    attributes: dict


def _probe(resource: Resource, verb: str, namespace: str | None, subresource: str = "") -> Probe:
    group = resource.group_version.rpartition("/")[0]
    name = namespace if resource.plural == "namespaces" and namespace else PROBE
    single = verb not in ("list", "watch", "create", "deletecollection") or bool(subresource)
    attributes = {"verb": verb, "group": group, "resource": resource.plural, "subresource": subresource,
                  "name": name if single else "",
                  # a Namespace is authorized in itself, as kube-apiserver's request info has it
                  "namespace": name if resource.plural == "namespaces" and single else namespace or ""}
    dry = {"dryRun": "All"}
    if subresource:
        path = f"{resource.path(namespace, PROBE)}/{subresource}"
        method, query, body = {"get": ("GET", {}, b""), "patch": ("PATCH", dry, b"{}"), "create": ("POST", {}, b"{}")}[verb]
        return Probe(verb, method, path, query, body, attributes)
    item, collection = resource.path(namespace, name), resource.path(namespace)
    method, path, query, body = {
        "get": ("GET", item, {}, b""),
        "list": ("GET", collection, {"limit": "1"}, b""),
        "watch": ("GET", collection, {"watch": "true", "timeoutSeconds": "1"}, b""),
        "create": ("POST", collection, dry, _body(resource, PROBE)),
        "update": ("PUT", item, dry, _body(resource, PROBE)),
        "patch": ("PATCH", item, dry, b"{}"),
        "delete": ("DELETE", item, dry, b""),
        "deletecollection": ("DELETE", collection, dry | {"labelSelector": f"{PROBE}=none"}, b""),
    }[verb]
    return Probe(verb, method, path, query, body, attributes)


async def _refused(session: aiohttp.ClientSession, server: Server, user: str, probe: Probe) -> bool:
    """Whether RBAC refused the request; a 403 of another kind (admission) is a failure of the probe."""
    content_type = "application/merge-patch+json" if probe.method == "PATCH" else "application/json"
    where = (user, probe.method, probe.path)
    async with session.request(probe.method, server.kubectl.url + probe.path, params=probe.query, data=probe.body or None,
                               ssl=server.contexts[user], headers=server.headers[user] | {"Content-Type": content_type}
                               ) as response:
        if response.status == 200 and probe.query.get("watch"):
            return False  # a stream, open until its timeout
        text = await response.text()
        # Past authorization, the request reached its handler: an answer of the API, not of the router.
        assert response.status < 500 and response.status != 405, (*where, response.status, text)
        if response.status == 404:
            assert json.loads(text)["reason"] == "NotFound", (*where, text)
        if response.status != 403:
            return False
        message = json.loads(text)["message"]
        assert f"cannot {probe.verb} resource" in message, (*where, message)
        return True


async def _reviewed(session: aiohttp.ClientSession, server: Server, user: str, probe: Probe) -> bool:
    """What a SelfSubjectAccessReview of the same attributes answers (`kubectl auth can-i`)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": probe.attributes}}
    async with session.post(server.kubectl.url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review,
                            ssl=server.contexts[user], headers=server.headers[user]) as response:
        assert response.status == 201, await response.text()
        return bool((await response.json())["status"]["allowed"])


def _grade(allowed: dict[str, bool]) -> str:
    """R/W when every read/write verb asked was allowed, "" when none was; a mixture shows the verbs."""
    reads = [allowed[v] for v in READS if v in allowed]
    writes = [allowed[v] for v in WRITES if v in allowed]
    if len(set(reads)) > 1 or len(set(writes)) > 1:
        return ",".join(v for v, ok in allowed.items() if ok)
    return ("R" if any(reads) else "") + ("W" if any(writes) else "")


async def _table(server: Server, user: str, cells: dict[str, list[Probe]]) -> dict[str, str]:
    """Each cell graded by the real requests' outcomes, once it is checked that a SelfSubjectAccessReview of
    each request's attributes says the same as the request met."""
    gate = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:
        async def ask(probe: Probe) -> tuple[bool, bool]:
            async with gate:
                return (not await _refused(session, server, user, probe)), await _reviewed(session, server, user, probe)

        asked = [(cell, probe) for cell, probes in cells.items() for probe in probes]
        answers = await asyncio.gather(*(ask(probe) for _, probe in asked))
    disagreeing = [(cell, probe.verb, met) for (cell, probe), (met, reviewed) in zip(asked, answers, strict=True)
                   if met != reviewed]
    assert not disagreeing, f"{user}: a SelfSubjectAccessReview says otherwise than the request met: {disagreeing}"
    allowed: dict[str, dict[str, bool]] = {cell: {} for cell in cells}
    for (cell, probe), (met, _) in zip(asked, answers, strict=True):
        allowed[cell][probe.verb] = met
    return {cell: _grade(verbs) for cell, verbs in allowed.items()}


def _namespace_cells(server: Server, namespace: str) -> dict[str, list]:
    cells: dict[str, list] = {}
    for plural in NAMESPACED:
        resource = server.resources[plural]
        verbs = ("get", "update", "patch", "delete") if plural == "namespaces" else resource.verbs
        cells[plural] = [_probe(resource, verb, namespace) for verb in verbs]
    for name, (verbs, *_) in SUBRESOURCES.items():
        plural, _, subresource = name.partition("/")
        cells[name] = [_probe(server.resources[plural], verb, namespace, subresource) for verb in verbs]
    return cells


def _cluster_cells(server: Server) -> dict[str, list]:
    cells: dict[str, list] = {}
    for plural in NAMESPACED:
        if plural != "namespaces":
            resource = server.resources[plural]
            cells[f"{plural} (all namespaces)"] = [_probe(resource, verb, None) for verb in ("list", "watch")]
    for plural in CLUSTER:
        resource = server.resources[plural]
        if resource.verbs == ("create",):
            group = resource.group_version.rpartition("/")[0]
            cells[plural] = [Probe("create", "POST", resource.path(None), {}, _body(resource, ""),
                                   {"verb": "create", "group": group, "resource": plural})]
        else:
            cells[plural] = [_probe(resource, verb, None) for verb in resource.verbs]
    return cells


def test_the_table_covers_every_resource_the_server_serves(server: Server):
    namespaced = {name for name, r in server.resources.items() if r.namespaced}
    cluster = {name for name, r in server.resources.items() if not r.namespaced}
    assert namespaced == set(NAMESPACED) - {"namespaces"}
    assert cluster == set(CLUSTER)


@pytest.mark.parametrize("user", list(USERS))
def test_the_authorization_matrix(server: Server, user: str):
    in_a, in_b, cluster = USERS[user]
    assert asyncio.run(_table(server, user, _namespace_cells(server, "team-a"))) == expected_in_namespace(in_a)
    assert asyncio.run(_table(server, user, _namespace_cells(server, "team-b"))) == expected_in_namespace(in_b)
    assert asyncio.run(_table(server, user, _cluster_cells(server))) == expected_at_cluster_scope(
        cluster, {name: resource.verbs for name, resource in server.resources.items()})


# --- escalation -------------------------------------------------------------------------------------------

RBAC = "rbac.authorization.k8s.io"


def _as(server: Server, user: str, *args: str, input: str | None = None):
    """kubectl as `user`, with a kubeconfig holding that user's client certificate."""
    path = server.kubectl.directory / f"{user}.kubeconfig"
    if not path.exists():
        cert, key = server.kubectl.directory / f"{user}.crt", server.kubectl.directory / f"{user}.key"
        path.write_text(kubeconfig.render(server.kubectl.url, server.kubectl.ca.cert_pem, user,
                                          cert_pem=cert.read_bytes(), key_pem=key.read_bytes()))
        path.chmod(0o600)
    env = server.kubectl.kubectl_env() | {"KUBECONFIG": str(path)}
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60)


def _binding_to_self(user: str, role_kind: str = "ClusterRole", role: str = "cluster-admin") -> str:
    return json.dumps({"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding",
                       "metadata": {"name": f"{user}-escalates", "namespace": "team-a"},
                       "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
                       "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}]})


EVERYTHING_ROLE = json.dumps({"apiVersion": f"{RBAC}/v1", "kind": "Role",
                              "metadata": {"name": "everything", "namespace": "team-a"},
                              "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})


def test_a_tenant_cannot_raise_its_own_rights(server: Server):
    binding = _as(server, "team-a", "create", "-f", "-", input=_binding_to_self("team-a"))
    assert (binding.returncode, binding.stderr) == (1, (
        'Error from server (Forbidden): error when creating "STDIN": rolebindings.rbac.authorization.k8s.io is '
        'forbidden: User "team-a" cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io" '
        'in the namespace "team-a"\n'))
    role = _as(server, "team-a", "create", "-f", "-", input=EVERYTHING_ROLE)
    assert (role.returncode, role.stderr) == (1, (
        'Error from server (Forbidden): error when creating "STDIN": roles.rbac.authorization.k8s.io is forbidden: '
        'User "team-a" cannot create resource "roles" in API group "rbac.authorization.k8s.io" in the namespace '
        '"team-a"\n'))
    cluster_binding = _as(server, "team-a", "create", "clusterrolebinding", "mine", "--clusterrole=cluster-admin",
                          "--user=team-a")
    assert (cluster_binding.returncode, cluster_binding.stderr) == (1, (
        'error: failed to create clusterrolebinding: clusterrolebindings.rbac.authorization.k8s.io is forbidden: '
        'User "team-a" cannot create resource "clusterrolebindings" in API group "rbac.authorization.k8s.io" at the '
        'cluster scope\n'))
    # Acting as the administrator takes the impersonate verb on users and groups, which edit does not hold.
    impersonating = _as(server, "team-a", "get", "nodes", "--as=admin", "--as-group=system:masters")
    assert (impersonating.returncode, impersonating.stderr) == (1, (
        'Error from server (Forbidden): users "admin" is forbidden: User "team-a" cannot impersonate resource '
        '"users" in API group "" at the cluster scope\n'))
    assert _as(server, "team-a", "auth", "can-i", "create", "rolebindings", "-n", "team-a").stdout == "no\n"


def test_a_namespace_admin_cannot_grant_what_it_does_not_hold(server: Server):
    # ClusterRole admin may write Roles and RoleBindings in its namespace, but only with rules it holds there.
    role = _as(server, "ada", "create", "-f", "-", input=EVERYTHING_ROLE)
    assert (role.returncode, role.stderr) == (1, (
        'Error from server (Forbidden): error when creating "STDIN": roles.rbac.authorization.k8s.io "everything" is '
        'forbidden: user "ada" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not '
        'currently held:\n{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n'))
    binding = _as(server, "ada", "create", "-f", "-", input=_binding_to_self("ada"))
    assert binding.returncode == 1
    assert binding.stderr.startswith(
        'Error from server (Forbidden): error when creating "STDIN": rolebindings.rbac.authorization.k8s.io '
        '"ada-escalates" is forbidden: user "ada" (groups=["system:authenticated"]) is attempting to grant RBAC '
        'permissions not currently held:\n'), binding.stderr
    # What ada holds she may hand on: edit in team-a, to team-b's user.
    handed = _as(server, "ada", "create", "rolebinding", "b-helps", "--clusterrole=edit", "--user=team-b", "-n", "team-a")
    assert handed.stdout == "rolebinding.rbac.authorization.k8s.io/b-helps created\n", handed.stderr
    _ok(server.kubectl, "delete", "rolebinding", "b-helps", "-n", "team-a")


def test_a_service_account_cannot_mint_another_accounts_token(server: Server):
    _ok(server.kubectl, "create", "serviceaccount", "deployer", "-n", "team-a")

    async def ask() -> tuple[int, str]:
        path = "/api/v1/namespaces/team-a/serviceaccounts/deployer/token"
        async with aiohttp.ClientSession() as session, session.post(
                server.kubectl.url + path, ssl=server.contexts["robot"], headers=server.headers["robot"],
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}) as response:
            return response.status, json.loads(await response.text())["message"]

    assert asyncio.run(ask()) == (403, (
        'serviceaccounts "deployer" is forbidden: User "system:serviceaccount:team-a:robot" cannot create resource '
        '"serviceaccounts/token" in API group "" in the namespace "team-a"'))


def test_delete_and_deletecollection_are_verbs_of_their_own(server: Server):
    for user, verb in (("del", "delete"), ("sweep", "deletecollection")):
        _ok(server.kubectl, "create", "role", f"{user}-role", f"--verb={verb}", "--resource=configmaps", "-n", "team-b")
        _ok(server.kubectl, "create", "rolebinding", f"{user}-binding", f"--role={user}-role", f"--user={user}",
            "-n", "team-b")
        server.contexts[user] = _context(server.kubectl, user, ())
        server.headers[user] = {}
        _granted(server.kubectl, verb, "configmaps", "-n", "team-b", f"--as={user}")
    configmaps = server.resources["configmaps"]
    asks = {verb: [_probe(configmaps, verb, "team-b")] for verb in ("delete", "deletecollection")}
    assert asyncio.run(_table(server, "del", asks)) == {"delete": "W", "deletecollection": ""}
    assert asyncio.run(_table(server, "sweep", asks)) == {"delete": "", "deletecollection": "W"}
