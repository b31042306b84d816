"""A cluster's credentials, made by `podnet up` (and `podnet compose credentials`) before any process starts.

Under `<home>/pki/`, every file created with O_CREAT|O_EXCL and mode 0600 from the start, so no key or
token is readable by anyone else for even a moment, and nothing written by someone else beforehand
(a file, a symlink) is ever written through:

| file                    | what                                                                        |
|-------------------------|-----------------------------------------------------------------------------|
| `ca.crt`, `ca.key`      | the cluster CA: signs the serving and the client certificates              |
| `apiserver.crt/.key`    | the API server's serving certificate, for every address it is reached at   |
| `sa.key`                | signs service-account tokens (kube-apiserver's --service-account-signing-key-file) |
| `audit-policy.yaml`     | the API server's audit policy (podnet/cluster/auditpolicy.py), kept across `podnet up` |
| `tokens.csv`            | the API server's `--token-auth-file`: the admin, a read-only viewer (group  |
|                         | `view`, for the web UI) and one token per component                         |
| `<component>.kubeconfig`| what each component (agent, kube-proxy, DNS, ...) connects with: server, CA, its token |

and `<home>/kubeconfig`, the administrator's: the CA and a client certificate (CN=admin,
O=system:masters), everything inline, as kubeadm's admin.conf; beside it `<home>/<tenant>.kubeconfig` for each
demo tenant (CN=<tenant>, no group), whose rights are the RoleBinding `<tenant>-edit` of deploy/demo/ (ClusterRole
edit in its own namespace). The admin token (in `tokens.csv`) is the
bearer-token way in, for clients without certificates. A new `podnet up` in the same home keeps the CA, as
kubeadm keeps an existing one, so kubeconfigs with certificates it signed (copied, merged into
~/.kube/config) go on working; everything else, tokens included, is issued anew.

Each component has its own user name (system:node:node-1, system:kube-proxy:node-1, ...), so the server knows
who did what, and the group of its kind (`COMPONENT_GROUPS`: system:nodes, ...), which the API server's default
RBAC bindings give exactly the rights that kind of component uses (apiserver/rbac/defaults.py); a component of
another kind stays a cluster administrator (system:masters).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from podnet import kubeconfig, pki
from podnet.cluster import auditpolicy

PKI_DIR = "pki"
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
# A read-only user with a token, for clients that take nothing else (the web UI's login): podnet's token-file
# group `view` reads every kind but Secrets (apiserver/rbac/defaults.py).
VIEWER_USER = "viewer"
VIEWER_GROUPS = ("view",)
# The demo's tenants (deploy/demo/02-multi-tenancy.yaml): each a user of its own, bound to edit in its namespace.
TENANTS = ("team-a", "team-b")
# The names in-cluster clients use for the API server (the `kubernetes` Service), as kube-apiserver's own.
SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def pki_dir(home: Path) -> Path:
    return home / PKI_DIR


def ca_file(home: Path) -> Path:
    return pki_dir(home) / "ca.crt"


def serving_files(home: Path) -> tuple[Path, Path]:
    return pki_dir(home) / "apiserver.crt", pki_dir(home) / "apiserver.key"


def service_account_key_file(home: Path) -> Path:
    return pki_dir(home) / "sa.key"


def token_file(home: Path) -> Path:
    return pki_dir(home) / "tokens.csv"


def component_kubeconfig(home: Path, component: str) -> Path:
    """`node-1/agent` -> <home>/pki/node-1_agent.kubeconfig."""
    return pki_dir(home) / f"{component.replace('/', '_')}.kubeconfig"


# A component's group by its kind, as apiserver/rbac/defaults.py binds them.
COMPONENT_GROUPS = {"agent": "system:nodes", "kube-proxy": "system:podnet:kube-proxies", "bgp": "system:podnet:bgp",
                    "dns": "system:podnet:dns", "cloud-lb": "system:podnet:cloud-lb",
                    "ingress": "system:podnet:ingress"}


_REPLICA_SUFFIX = re.compile(r"-[0-9]+$")


def component_groups(component: str) -> tuple[str, ...]:
    """`node-1/agent` -> ("system:nodes",); `dns` and `dns-2` -> ("system:podnet:dns",)."""
    kind = component.partition("/")[2] or _REPLICA_SUFFIX.sub("", component)  # `dns-2` is a dns replica
    return (COMPONENT_GROUPS[kind],) if kind in COMPONENT_GROUPS else ADMIN_GROUPS


def component_user(component: str) -> str:
    """The user name a component's token stands for, after the names Kubernetes gives its own."""
    host, _, role = component.partition("/")
    return {"agent": f"system:node:{host}", "kube-proxy": f"system:kube-proxy:{host}",
            "bgp": f"system:podnet:bgp:{host}"}.get(role, f"system:podnet:{component}")


def tenant_kubeconfig(home: Path, tenant: str) -> Path:
    return home / f"{tenant}.kubeconfig"


def kubernetes_service_ip(service_cidr: str) -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the range (10.96.0.1)."""
    return str(ipaddress.ip_network(service_cidr)[1])


def serving_names(api_addresses: Iterable[str], service_cidr: str) -> list[str]:
    """Every name the API server is reached by: its own addresses, this machine's loopback names, the
    `kubernetes` Service's IP and DNS names."""
    return list(dict.fromkeys([*api_addresses, *LOCAL_NAMES, kubernetes_service_ip(service_cidr), *SERVICE_NAMES]))


def write_secret(path: Path, data: bytes) -> None:
    """Creates `path` readable by its owner alone; fails if anything is already there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def replace_secret(path: Path, data: bytes) -> None:
    """As write_secret, for a file that an earlier cluster in the same home may have left."""
    path.unlink(missing_ok=True)
    write_secret(path, data)


def user_token(home: Path, user: str) -> str | None:
    """The token of `user` in the cluster's token file (the admin's, the viewer's), if it has one."""
    try:
        rows = token_file(home).read_text().splitlines()
    except FileNotFoundError:
        return None
    return next((fields[0] for fields in (row.split(",") for row in rows) if len(fields) > 1 and fields[1] == user),
                None)


def _earlier_ca(directory: Path, now: datetime.datetime) -> pki.KeyPair | None:
    """The CA an earlier cluster in this home made, if it is whole and outlives the certificates it will sign."""
    try:
        ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
        usable = ca.matches and ca.certificate.not_valid_after_utc >= now + pki.LEAF_VALIDITY
    except (OSError, ValueError):
        return None
    return ca if usable else None


def issue(home: Path, *, server: str, api_addresses: Iterable[str], service_cidr: str, components: Iterable[str],
          now: datetime.datetime, admin_server: str | None = None, tls: bool = True,
          fallbacks: tuple[str, ...] = ()) -> str:
    """Makes the CA, the serving certificate, the tokens and every kubeconfig under `home`. Components reach
    the API server at `server`, or when it does not answer at one of `fallbacks` (the cluster's other API
    servers); the administrator's kubeconfig at `admin_server` (default: `server`, with the fallbacks). With
    `tls` False (the plain-HTTP debugging mode) there are no certificates and the admin kubeconfig holds
    the admin token. Returns the admin token."""
    directory = pki_dir(home)
    ca = (_earlier_ca(directory, now) or pki.make_ca(now)) if tls else None
    audit_policy = auditpolicy.policy_text(auditpolicy.policy_file(directory), COMPONENT_GROUPS.values())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    write_secret(auditpolicy.policy_file(directory), audit_policy.encode())
    if ca is not None:
        write_secret(directory / "ca.crt", ca.cert_pem)
        write_secret(directory / "ca.key", ca.key_pem)
        serving = pki.make_serving(ca, serving_names(api_addresses, service_cidr), now)
        cert, key = serving_files(home)
        write_secret(cert, serving.cert_pem)
        write_secret(key, serving.key_pem)
    write_secret(service_account_key_file(home), pki.make_signing_key())
    admin_token = secrets.token_hex(16)
    rows = [f'{admin_token},{ADMIN_USER},{ADMIN_USER},"{",".join(ADMIN_GROUPS)}"',
            f'{secrets.token_hex(16)},{VIEWER_USER},{VIEWER_USER},"{",".join(VIEWER_GROUPS)}"']
    ca_pem = ca.cert_pem if ca else None
    admin_fallbacks = () if admin_server else fallbacks
    for component in components:
        token = secrets.token_hex(16)
        user = component_user(component)
        rows.append(f'{token},{user},{user},"{",".join(component_groups(component))}"')
        write_secret(component_kubeconfig(home, component),
                     kubeconfig.render(server, ca_pem, user, token=token, fallbacks=fallbacks).encode())
    write_secret(token_file(home), ("\n".join(rows) + "\n").encode())
    if ca is not None:
        admin = pki.make_client(ca, ADMIN_USER, ADMIN_GROUPS, now)
        admin_config = kubeconfig.render(admin_server or server, ca.cert_pem, ADMIN_USER,
                                         cert_pem=admin.cert_pem, key_pem=admin.key_pem, fallbacks=admin_fallbacks)
        for tenant in TENANTS:
            certificate = pki.make_client(ca, tenant, [], now)
            replace_secret(tenant_kubeconfig(home, tenant), kubeconfig.render(
                admin_server or server, ca.cert_pem, tenant, cert_pem=certificate.cert_pem, key_pem=certificate.key_pem,
                fallbacks=admin_fallbacks).encode())
    else:
        admin_config = kubeconfig.render(admin_server or server, None, ADMIN_USER, token=admin_token,
                                         fallbacks=admin_fallbacks)
    replace_secret(home / "kubeconfig", admin_config.encode())
    return admin_token
