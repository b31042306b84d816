"""Pods as the L7 policy tests write them: Running, with an address, labelled `app`, on a node."""

from __future__ import annotations


def running_pod(name: str, ip: str, app: str, *, namespace: str = "default", node: str = "node-1") -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}, "resourceVersion": "1"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }
