"""The ServiceAccount admission step for new pods, as kube-apiserver's ServiceAccount plugin mutates them
(plugin/pkg/admission/serviceaccount): a pod without `serviceAccountName` runs as `default`, and unless
the pod or its ServiceAccount sets `automountServiceAccountToken: false` it gets the projected volume
`kube-api-access-<random>` — a bound token (3607 seconds, refreshed by the kubelet), the cluster CA from
the namespace's `kube-root-ca.crt` ConfigMap, and the namespace — mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container that mounts nothing there itself.

Where kube-apiserver refuses a pod whose ServiceAccount does not exist, podnet admits it without the volume
(so servers run without controllers, where no `default` account is made, still run pods); a server on plain
HTTP, which has no CA to give, leaves pods as they are. `inject` is pure, `admit` reads the account.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from podnet.apiserver.codec import from_storage
from podnet.apiserver.storage.base import KeyValue, Store

DEFAULT_ACCOUNT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
# A bound token of 3607 seconds is the kubelet's own: kube-apiserver recognises it for its warnings.
TOKEN_SECONDS = 3607
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def account_name(pod: dict) -> str:
    return str((pod.get("spec") or {}).get("serviceAccountName") or (pod.get("spec") or {}).get("serviceAccount")
               or DEFAULT_ACCOUNT)


def _volume(name: str) -> dict:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def inject(pod: dict, account: dict | None, suffix: str) -> None:
    """Sets the pod's account and, when it should have one, its token volume and mounts (in place)."""
    spec = pod.setdefault("spec", {})
    name = account_name(pod)
    spec["serviceAccountName"] = spec["serviceAccount"] = name
    if account is None or spec.get("automountServiceAccountToken") is False:
        return
    if spec.get("automountServiceAccountToken") is None and account.get("automountServiceAccountToken") is False:
        return
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if all(any(m.get("mountPath") == MOUNT_PATH for m in c.get("volumeMounts") or []) for c in containers):
        return
    volume_name = VOLUME_PREFIX + suffix
    spec.setdefault("volumes", []).append(_volume(volume_name))
    for container in containers:
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("mountPath") == MOUNT_PATH for m in mounts):
            mounts.append({"name": volume_name, "readOnly": True, "mountPath": MOUNT_PATH})


async def admit(pod: dict, store: Store, account_key: Callable[[str], str],
                guard: Callable[[Awaitable[KeyValue | None]], Awaitable[KeyValue | None]]) -> None:
    """Mutates a new pod; `account_key(name)` is the storage key of a ServiceAccount of the pod's namespace,
    `guard` wraps the storage read (the server's deadline)."""
    if ((pod.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/config.mirror"):
        return  # a mirror pod (a node's static pod) is left as the node wrote it
    kv = await guard(store.get(account_key(account_name(pod))))
    account = None if kv is None else from_storage(kv.value, kv.mod_revision)
    inject(pod, account, "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)))
