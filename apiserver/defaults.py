"""Defaulting, as kube-apiserver applies it between decoding a body and validating it.

Pure functions on plain dicts; each fills in only what is missing, so they are safe to run on every
create and update. The values are Kubernetes' own (pkg/apis/*/v1/defaults.go).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from podnet.apiserver.configkinds import default_secret
from podnet.apiserver.limitrange import default_limit_range

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_SESSION_AFFINITY_TIMEOUT = 10800  # seconds: 3 hours, as Kubernetes


def _dict(parent: dict, key: str) -> dict:
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    elif not isinstance(value, dict):
        return {}  # left as sent, for validation to report
    return value


def _dicts(value: object) -> list[dict]:
    """The dict items of a list field; anything else is left for validation to report."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def default_namespace(obj: dict) -> None:
    metadata = _dict(obj, "metadata")
    name = metadata.get("name")
    if isinstance(name, str):
        # Set by the API server, whatever the client sent: the label cannot be changed or removed.
        _dict(metadata, "labels")[NAMESPACE_NAME_LABEL] = name
    spec = _dict(obj, "spec")
    spec.setdefault("finalizers", ["kubernetes"])
    _dict(obj, "status").setdefault("phase", "Active")


def _image_pull_policy(image: object) -> str:
    if not isinstance(image, str):
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_container(container: dict) -> None:
    container.setdefault("imagePullPolicy", _image_pull_policy(container.get("image")))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in _dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for container in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        default_container(container)


def default_pod(obj: dict) -> None:
    default_pod_spec(_dict(obj, "spec"))


def default_service(obj: dict) -> None:
    spec = _dict(obj, "spec")
    service_type = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("sessionAffinity") == "ClientIP":
        client_ip = _dict(_dict(spec, "sessionAffinityConfig"), "clientIP")
        client_ip.setdefault("timeoutSeconds", DEFAULT_SESSION_AFFINITY_TIMEOUT)
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if "targetPort" not in port and "port" in port:
            port["targetPort"] = port["port"]
    if service_type in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if service_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if service_type != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        cluster_ip = spec.get("clusterIP")
        if isinstance(cluster_ip, str) and cluster_ip and "clusterIPs" not in spec:
            spec["clusterIPs"] = [cluster_ip]
        if "ipFamilies" not in spec:
            spec["ipFamilies"] = [_ip_family(cluster_ip)]
        spec.setdefault("ipFamilyPolicy", "SingleStack")


def _ip_family(address: object) -> str:
    try:
        if isinstance(address, str) and ipaddress.ip_address(address).version == 6:
            return "IPv6"
    except ValueError:
        pass
    return "IPv4"


def default_network_policy(obj: dict) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("podSelector", {})
    for rule in _dicts(spec.get("ingress")) + _dicts(spec.get("egress")):
        for port in _dicts(rule.get("ports")):
            port.setdefault("protocol", "TCP")
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def default_endpoints(obj: dict) -> None:
    for subset in _dicts(obj.get("subsets")):
        for port in _dicts(subset.get("ports")):
            port.setdefault("protocol", "TCP")


def default_endpoint_slice(obj: dict) -> None:
    for port in _dicts(obj.get("ports")):
        port.setdefault("protocol", "TCP")


def default_deployment(obj: dict) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = _dict(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    template = _dict(spec, "template")
    default_pod_spec(_dict(template, "spec"))


def default_replica_set(obj: dict) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    default_pod_spec(_dict(_dict(spec, "template"), "spec"))


def default_stateful_set(obj: dict) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = _dict(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _dict(strategy, "rollingUpdate").setdefault("partition", 0)
    retention = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    default_pod_spec(_dict(_dict(spec, "template"), "spec"))


def default_daemon_set(obj: dict) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = _dict(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    default_pod_spec(_dict(_dict(spec, "template"), "spec"))


# The labels a Job's generated selector and its pods carry (batch/v1 types.go), legacy names included.
JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
JOB_UID_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")


def default_job(obj: dict) -> None:
    """SetDefaults_Job, and the selector the Job strategy generates unless `manualSelector`: the pods'
    job-name and controller-uid labels, selected by the uid (the object's, set before defaulting)."""
    spec = _dict(obj, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    template = _dict(spec, "template")
    template_meta = _dict(template, "metadata")
    metadata = _dict(obj, "metadata")
    if template_meta.get("labels") and not metadata.get("labels"):
        metadata["labels"] = dict(template_meta["labels"])
    uid, name = metadata.get("uid"), metadata.get("name")
    if not spec.get("manualSelector") and isinstance(uid, str) and isinstance(name, str):
        labels = _dict(template_meta, "labels")
        for label in JOB_NAME_LABELS:
            labels.setdefault(label, name)
        for label in JOB_UID_LABELS:
            labels.setdefault(label, uid)
        _dict(_dict(spec, "selector"), "matchLabels").setdefault(JOB_UID_LABELS[1], uid)
        if not metadata.get("labels"):
            metadata["labels"] = dict(labels)  # as kube-apiserver's defaulting shows them on every read
    default_pod_spec(_dict(template, "spec"))


def default_cron_job(obj: dict) -> None:
    """SetDefaults_CronJob; the Job template's pod spec is defaulted as any pod template, the Job fields are
    left for each Job's own defaulting."""
    spec = _dict(obj, "spec")
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    default_pod_spec(_dict(_dict(_dict(_dict(spec, "jobTemplate"), "spec"), "template"), "spec"))


DEFAULTERS: dict[str, Callable[[dict], None]] = {
    "Namespace": default_namespace,
    "Pod": default_pod,
    "Service": default_service,
    "NetworkPolicy": default_network_policy,
    "Endpoints": default_endpoints,
    "EndpointSlice": default_endpoint_slice,
    "Deployment": default_deployment,
    "ReplicaSet": default_replica_set,
    "StatefulSet": default_stateful_set,
    "DaemonSet": default_daemon_set,
    "Secret": default_secret,
    "Job": default_job,
    "CronJob": default_cron_job,
    "LimitRange": default_limit_range,
}


def apply_defaults(kind_name: str, obj: dict) -> None:
    defaulter = DEFAULTERS.get(kind_name)
    if defaulter is not None:
        defaulter(obj)
