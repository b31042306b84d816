"""What a node's own credential may change, as kube-apiserver's NodeRestriction admission decides it
(plugin/pkg/admission/noderestriction). Pure.

A node agent authenticates as `system:node:<name>` in the group `system:nodes`; RBAC (the role
`system:podnet:node`) says which kinds it may write at all, and this says which objects: its own Node and
its status (not its taints), its own Lease in kube-node-lease, the status of pods bound to it and the
deletion of those pods. So a node whose credential leaks — every node is a machine that
runs tenants' programs — cannot mark another node NotReady, hold another node's lease, or report another
node's pods with addresses of its choosing (which EndpointSlices would then carry). Refusals carry
NodeRestriction's own words.
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.apiserver.auth import User

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
LEASE_NAMESPACE = "kube-node-lease"


def node_of(user: User | None) -> str | None:
    """The node a user is the agent of, or None for anyone else (as the Node authorizer's identifier)."""
    if user is None or NODES_GROUP not in user.groups or not user.name.startswith(NODE_USER_PREFIX):
        return None
    return user.name.removeprefix(NODE_USER_PREFIX) or None


def _node_name(pod: Mapping | None) -> str:
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


def refusal(node: str, operation: str, kind: str, subresource: str, name: str, namespace: str | None,
            old: Mapping | None, new: Mapping | None) -> str | None:
    """Why node `node` may not do `operation` ("create", "update", "delete") on the object (`old` as stored,
    `new` as it would be), or None when it may."""
    if kind == "Node":
        if name != node:
            return f'node "{node}" is not allowed to modify node "{name}"'
        if operation == "update" and ((old or {}).get("spec") or {}).get("taints") != ((new or {}).get("spec") or {}).get("taints"):
            return f'node "{node}" is not allowed to modify taints'
        return None
    if kind == "Lease":
        if namespace != LEASE_NAMESPACE:
            return f'can only access leases in the "{LEASE_NAMESPACE}" system namespace'
        if name != node:
            return "can only access node lease with the same name as the requesting node"
        return None
    if kind == "Pod":
        if operation == "delete":
            return None if _node_name(old) == node else f'node "{node}" can only delete pods with spec.nodeName set to itself'
        if subresource == "status" and operation == "update":
            # A status write takes nothing but the status (handlers.py), so labels cannot change through it.
            return None if _node_name(old) == node else (
                f'node "{node}" can only update pod status for pods with spec.nodeName set to itself')
        return f'unexpected operation "{operation.upper()}", node "{node}" can only update pod status and delete its pods'
    if kind == "Namespace" and operation == "create" and name != LEASE_NAMESPACE:
        # An agent creates kube-node-lease on a server without controllers; no other namespace.
        return f'node "{node}" can only create the namespace "{LEASE_NAMESPACE}"'
    return None
