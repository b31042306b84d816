"""The audit policy `podnet up` gives the API server, and where its audit log goes.

The policy (`<home>/pki/audit-policy.yaml`, beside the other files the API server reads, so a compose
cluster mounts it too) records who did what: every change with its request body, reads and everything
else as metadata, and Secrets, ConfigMaps and tokens as metadata only, so no secret is copied into the log.
It leaves out what would drown that: the cluster's own components reading (informers relist and watch all
day), node heartbeats (Lease renewals), the health probes, and the API server's in-process controllers.
A policy edited by hand is kept by the next `podnet up` in the same home. The log is
`<home>/logs/audit.log` (`podnet logs apiserver --audit`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

_DEFAULT_POLICY = """\
# The API server's audit policy (kube-apiserver's --audit-policy-file). The first rule that matches a
# request decides its level: None, Metadata, Request or RequestResponse. Kept by `podnet up` once edited.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # The in-process controllers (the API server's loopback user).
  - level: None
    users: ["system:apiserver"]
  # Health probes and metrics scrapes.
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/metrics", "/version"]
  # Node heartbeats.
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get", "update", "patch"]
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
  # The cluster's components reading what they watch.
  - level: None
    userGroups: {component_groups}
    verbs: ["get", "list", "watch"]
  # Secrets, ConfigMaps and tokens: who touched them, never their contents.
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps", "serviceaccounts/token"]
      - group: authentication.k8s.io
        resources: ["tokenreviews"]
  # Every change, with what was sent.
  - level: Request
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  # Everything else: who, what, when, and the answer.
  - level: Metadata
"""


def policy_file(pki_dir: Path) -> Path:
    return pki_dir / "audit-policy.yaml"


def log_file(home: Path, apiserver: str = "apiserver") -> Path:
    """Each API server's audit log: `audit.log` the first one's, `audit-apiserver-2.log` the next one's..."""
    return home / "logs" / ("audit.log" if apiserver == "apiserver" else f"audit-{apiserver}.log")


def default_policy(component_groups: Iterable[str]) -> str:
    """The default policy, leaving out the reads of the components in `component_groups`."""
    return _DEFAULT_POLICY.replace("{component_groups}", json.dumps(sorted(set(component_groups))))


def policy_text(earlier: Path, component_groups: Iterable[str]) -> str:
    """The policy to write: the one already at `earlier` if there is one (edited by hand), else the default."""
    try:
        return earlier.read_text()
    except (OSError, UnicodeDecodeError):
        return default_policy(component_groups)
