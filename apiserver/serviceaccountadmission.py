"""The ServiceAccount admission plugin's part that gives pods their API access, as kube-apiserver's does.

A new Pod gets `spec.serviceAccountName: default` when it names none, and, unless it says
`automountServiceAccountToken: false` or already mounts something at the token path, the projected volume
`kube-api-access-<5 characters>` mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every
container: a service-account token from the TokenRequest API (3607 seconds, as kube-apiserver asks), the
cluster CA (`ca.crt` of the `kube-root-ca.crt` ConfigMap that `controllers/rootca.py` publishes in every
namespace) and the pod's namespace. The node agent fills it (nodeagent/volumes.py). The plugin runs only
where tokens can be issued and the CA is known (a signing key and a client CA file): elsewhere the volume
could never be made and every netns pod would wait for it.

Not done as kube-apiserver does: a ServiceAccount's own `automountServiceAccountToken: false` is not read,
and a pod naming a ServiceAccount that does not exist is admitted (the token request then waits for it).
Pure.
"""

from __future__ import annotations

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION = 3607
DEFAULT_SERVICE_ACCOUNT = "default"


def api_access_volume(name: str) -> dict:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def admit(pod: dict, suffix: str) -> None:
    """Adds the ServiceAccount and its API access volume to a new pod (in place); `suffix` names the volume."""
    spec = pod.setdefault("spec", {})
    spec["serviceAccountName"] = spec.get("serviceAccountName") or DEFAULT_SERVICE_ACCOUNT
    if spec.get("automountServiceAccountToken") is False:
        return
    containers = [c for field in ("initContainers", "containers") for c in spec.get(field) or [] if isinstance(c, dict)]
    if any(m.get("mountPath") == TOKEN_PATH for c in containers for m in c.get("volumeMounts") or []):
        return
    name = VOLUME_PREFIX + suffix
    spec["volumes"] = [*(spec.get("volumes") or []), api_access_volume(name)]
    for container in containers:
        container["volumeMounts"] = [*(container.get("volumeMounts") or []),
                                     {"name": name, "mountPath": TOKEN_PATH, "readOnly": True}]
