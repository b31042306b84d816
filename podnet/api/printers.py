"""The table of each kind, with kube-apiserver's columns (pkg/printers/internalversion/printers.go).

One `Printer` per kind (referenced from its entry in podnet/api/kinds.py) feeds both the server-side
`meta.k8s.io/v1` Tables that kubectl asks for and `podnet get`, so both tools show the same columns
and cells. As in kube-apiserver, a row carries every column; clients hide those of priority 1 unless
asked for wide output. Pure: `now` (seconds since the epoch) is a parameter.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from podnet.api.openapi import field_description

Cell = str | int

_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_CORE = "io.k8s.api.core.v1."
_APPS = "io.k8s.api.apps.v1."


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    description: str | tuple[str, ...]  # text, or (definition, field, ...) whose description it is
    type: str = "string"
    format: str = ""
    priority: int = 0

    def definition(self) -> dict:
        text = self.description if isinstance(self.description, str) else field_description(*self.description)
        return {"name": self.name, "type": self.type, "format": self.format, "description": text,
                "priority": self.priority}


@dataclass(frozen=True, slots=True)
class Printer:
    columns: tuple[Column, ...]
    row: Callable[[dict, float], list[Cell]]


# --- cells ------------------------------------------------------------------------------------------------


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return calendar.timegm(datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").timetuple())
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: 45s, 3m12s, 5h7m, 2d3h, 1y20d."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(value: object, now: float) -> str:
    """translateTimestampSince: the age of a timestamp, `<unknown>` when there is none."""
    then = _timestamp(value)
    return "<unknown>" if then is None else human_duration(now - then)


def age(obj: dict, now: float) -> str:
    return since(_meta(obj).get("creationTimestamp"), now)


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def format_labels(labels: object) -> str:
    """labels.FormatLabels: sorted key=value pairs, `<none>` when there are none."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selector_string(selector: object) -> str:
    """A LabelSelector as labels.Selector.String() writes it (requirements sorted by key), "" when empty."""
    if not isinstance(selector, dict):
        return ""
    requirements = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator")
        values = ",".join(sorted(expression.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key,
                "DoesNotExist": f"!{key}"}.get(operator, key)
        requirements.append((key, text))
    return ",".join(text for _, text in sorted(requirements))


def format_label_selector(selector: object) -> str:
    """metav1.FormatLabelSelector: like selector_string, but `<none>` when empty."""
    return selector_string(selector) or "<none>"


def _more(listed: list[str], count: int, limit: int = 3, empty: str = "<unset>") -> str:
    text = ",".join(listed[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _containers(template_owner: dict) -> tuple[str, str]:
    containers = ((_spec(template_owner).get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


# --- rows ---------------------------------------------------------------------------------------------


def _last_termination(container: dict) -> float | None:
    return _timestamp(((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))


def _latest(times: Iterable[float | None]) -> float | None:
    return max((t for t in times if t is not None), default=None)


def _pod_row(pod: dict, now: float) -> list[Cell]:
    spec, status = _spec(pod), _status(pod)
    total = len(spec.get("containers") or [])
    reason = status.get("reason") or status.get("phase") or ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    restartable = {c.get("name") for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"}
    total += len(restartable)
    init_statuses = status.get("initContainerStatuses") or []
    ready = restarts = 0
    last_restart: float | None = None
    initializing = False
    for index, container in enumerate(init_statuses):
        restarts += int(container.get("restartCount") or 0)
        last_restart = _latest((last_restart, _last_termination(container)))
        state = container.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if container.get("name") in restartable and container.get("started"):
            ready += 1 if container.get("ready") else 0
            continue
        initializing = True
        if terminated:
            code = terminated.get("reason") or (f"Signal:{terminated['signal']}" if terminated.get("signal")
                                                else f"ExitCode:{terminated.get('exitCode', 0)}")
            reason = f"Init:{code}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(spec.get('initContainers') or [])}"
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in status.get("conditions") or [])
    if not initializing or initialized:
        sidecars = [c for c in init_statuses if c.get("name") in restartable]
        restarts = sum(int(c.get("restartCount") or 0) for c in sidecars)
        last_restart = _latest(_last_termination(c) for c in sidecars)
        running = False
        for container in reversed(status.get("containerStatuses") or []):
            restarts += int(container.get("restartCount") or 0)
            last_restart = _latest((last_restart, _last_termination(container)))
            state = container.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated:
                reason = f"Signal:{terminated['signal']}" if terminated.get("signal") else f"ExitCode:{terminated.get('exitCode', 0)}"
            elif container.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    ips = status.get("podIPs") or []
    pod_ip = (ips[0].get("ip") if ips else None) or status.get("podIP") or "<none>"
    gates = spec.get("readinessGates") or []
    readiness = "<none>"
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        passed = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        readiness = f"{passed}/{len(gates)}"
    return [_meta(pod).get("name", ""), f"{ready}/{total}", reason, restarts_text, age(pod, now),
            pod_ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", readiness]


def _service_external_ip(svc: dict) -> str:
    spec = _spec(svc)
    svc_type = spec.get("type") or "ClusterIP"
    external = spec.get("externalIPs") or []
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        ingress = ((_status(svc).get("loadBalancer") or {}).get("ingress")) or []
        balancers = sorted({i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")})
        return ",".join(balancers + external) or "<pending>"
    if svc_type == "ExternalName":
        return spec.get("externalName") or ""
    return "<unknown>"


def _service_row(svc: dict, now: float) -> list[Cell]:
    spec = _spec(svc)
    ports = []
    for port in spec.get("ports") or []:
        node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
        ports.append(f"{port.get('port')}{node_port}/{port.get('protocol', 'TCP')}")
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [_meta(svc).get("name", ""), spec.get("type") or "ClusterIP", cluster_ips[0] if cluster_ips else "<none>",
            _service_external_ip(svc), ",".join(ports) or "<none>", age(svc, now), format_labels(spec.get("selector"))]


def _node_row(node: dict, now: float) -> list[Cell]:
    status = _status(node)
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    states = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if _spec(node).get("unschedulable"):
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in (_meta(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}
    addresses = status.get("addresses") or []

    def address(kind: str) -> str:
        return next((a.get("address", "") for a in addresses if a.get("type") == kind), "<none>")

    return [_meta(node).get("name", ""), ",".join(states), ",".join(sorted(roles)) or "<none>", age(node, now),
            info.get("kubeletVersion") or "", address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _namespace_row(ns: dict, now: float) -> list[Cell]:
    return [_meta(ns).get("name", ""), _status(ns).get("phase") or "", age(ns, now)]


def _endpoints_row(ep: dict, now: float) -> list[Cell]:
    subsets = ep.get("subsets") or []
    listed: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:
            count += len(addresses)
            listed += addresses
            continue
        for port in ports:
            count += len(addresses)
            listed += [f"[{ip}]:{port.get('port')}" if ":" in ip else f"{ip}:{port.get('port')}" for ip in addresses]
    return [_meta(ep).get("name", ""), _more(listed, count, empty="") if subsets else "<none>", age(ep, now)]


def _endpoint_slice_row(es: dict, now: float) -> list[Cell]:
    ports = es.get("ports") or []
    port_text = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*") for p in ports]
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    return [_meta(es).get("name", ""), es.get("addressType") or "", _more(port_text, len(port_text)),
            _more(addresses, len(addresses)), age(es, now)]


def _network_policy_row(np: dict, now: float) -> list[Cell]:
    return [_meta(np).get("name", ""), format_label_selector(_spec(np).get("podSelector") or {}), age(np, now)]


_DEFAULT_REPLICAS = 1  # what Kubernetes defaults an absent spec.replicas to


def _deployment_row(d: dict, now: float) -> list[Cell]:
    spec, status = _spec(d), _status(d)
    names, images = _containers(d)
    return [_meta(d).get("name", ""), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', _DEFAULT_REPLICAS)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(d, now), names, images,
            selector_string(spec.get("selector"))]


def _replica_set_row(rs: dict, now: float) -> list[Cell]:
    spec, status = _spec(rs), _status(rs)
    names, images = _containers(rs)
    return [_meta(rs).get("name", ""), spec.get("replicas", _DEFAULT_REPLICAS), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(rs, now), names, images, format_label_selector(spec.get("selector"))]


def _stateful_set_row(sts: dict, now: float) -> list[Cell]:
    names, images = _containers(sts)
    return [_meta(sts).get("name", ""), f"{_status(sts).get('readyReplicas', 0)}/{_spec(sts).get('replicas', _DEFAULT_REPLICAS)}",
            age(sts, now), names, images]


def _daemon_set_row(ds: dict, now: float) -> list[Cell]:
    spec, status = _spec(ds), _status(ds)
    names, images = _containers(ds)
    node_selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
    return [_meta(ds).get("name", ""), status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            format_labels(node_selector), age(ds, now), names, images, format_label_selector(spec.get("selector"))]


def _lease_row(lease: dict, now: float) -> list[Cell]:
    return [_meta(lease).get("name", ""), _spec(lease).get("holderIdentity") or "", age(lease, now)]


def _role_row(role: dict, now: float) -> list[Cell]:
    # kube-apiserver prints the creation time itself (RFC 3339, UTC), not an age.
    return [_meta(role).get("name", ""), _meta(role).get("creationTimestamp") or ""]


def _role_binding_row(binding: dict, now: float) -> list[Cell]:
    role_ref = binding.get("roleRef") or {}
    subjects = [s for s in binding.get("subjects") or [] if isinstance(s, dict)]

    def names(kind: str) -> str:
        return ", ".join(str(s.get("name", "")) for s in subjects if s.get("kind") == kind)

    accounts = ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in subjects
                         if s.get("kind") == "ServiceAccount")
    return [_meta(binding).get("name", ""), f"{role_ref.get('kind', '')}/{role_ref.get('name', '')}",
            age(binding, now), names("User"), names("Group"), accounts]


def _event_row(ev: dict, now: float) -> list[Cell]:
    first = since(ev.get("firstTimestamp"), now) if ev.get("firstTimestamp") else since(ev.get("eventTime"), now)
    last = since(ev.get("lastTimestamp"), now) if ev.get("lastTimestamp") else first
    count = ev.get("count") or 1
    if ev.get("series"):
        last = since(ev["series"].get("lastObservedTime"), now)
        count = ev["series"].get("count") or count
    involved = ev.get("involvedObject") or {}
    target = (involved.get("kind") or "").lower()
    if involved.get("name"):
        target += f"/{involved['name']}"
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingComponent") or ""
    instance = source.get("host") or ev.get("reportingInstance") or ""
    return [last, ev.get("type") or "", ev.get("reason") or "", target, involved.get("fieldPath") or "",
            f"{component}, {instance}" if instance else component, (ev.get("message") or "").strip(), first,
            count, _meta(ev).get("name", "")]


def _has_condition(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in _status(obj).get("conditions") or [])


def _job_state(job: dict) -> str:
    """The Job's STATUS cell, in kube-apiserver's order of precedence."""
    for kind in ("Complete", "Failed"):
        if _has_condition(job, kind):
            return kind
    if _meta(job).get("deletionTimestamp"):
        return "Terminating"
    return next((k for k in ("Suspended", "FailureTarget", "SuccessCriteriaMet") if _has_condition(job, k)), "Running")


def _job_row(job: dict, now: float) -> list[Cell]:
    spec, status = _spec(job), _status(job)
    succeeded = status.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 1) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    started, finished = _timestamp(status.get("startTime")), _timestamp(status.get("completionTime"))
    duration = "" if started is None else human_duration((finished if finished is not None else now) - started)
    names, images = _containers(job)
    return [_meta(job).get("name", ""), _job_state(job), completions, duration, age(job, now), names, images,
            selector_string(spec.get("selector"))]


def _config_map_row(cm: dict, now: float) -> list[Cell]:
    return [_meta(cm).get("name", ""), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), age(cm, now)]


def _secret_row(secret: dict, now: float) -> list[Cell]:
    return [_meta(secret).get("name", ""), secret.get("type") or "", len(secret.get("data") or {}), age(secret, now)]


def _service_account_row(sa: dict, now: float) -> list[Cell]:
    return [_meta(sa).get("name", ""), len(sa.get("secrets") or []), age(sa, now)]


def _resource_quota_row(quota: dict, now: float) -> list[Cell]:
    """Each resource of status.hard as `name: used/hard`, sorted; those named `limits.*` in their own column."""
    status = quota.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    requests, limits = [], []
    for resource in sorted(hard):
        column = limits if resource.split(".")[0] == "limits" and "." in resource else requests
        column.append(f"{resource}: {used.get(resource, '0')}/{hard[resource]}")
    return [_meta(quota).get("name", ""), age(quota, now), ", ".join(requests), ", ".join(limits)]


def _bool_cell(value: object) -> str:
    """printBoolPtr: `<unset>` for an absent boolean."""
    return "<unset>" if value is None else ("True" if value else "False")


def _cron_job_row(cj: dict, now: float) -> list[Cell]:
    spec, status = _spec(cj), _status(cj)
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    names, images = _containers({"spec": job_spec})
    last = status.get("lastScheduleTime")
    return [_meta(cj).get("name", ""), spec.get("schedule") or "", spec.get("timeZone") or "<none>",
            _bool_cell(spec.get("suspend")), len(status.get("active") or []), since(last, now) if last else "<none>",
            age(cj, now), names, images, format_label_selector(job_spec.get("selector"))]


def _ingress_hosts(rules: list[dict]) -> str:
    """formatHosts: the first three hosts; the rules past them counted, whatever their hosts."""
    listed: list[str] = []
    for rule in rules:
        if len(listed) == 3:
            return f"{','.join(listed)} + {len(rules) - 3} more..."
        if rule.get("host"):
            listed.append(rule["host"])
    return ",".join(listed) or "*"


def _ingress_row(ing: dict, now: float) -> list[Cell]:
    spec = _spec(ing)
    ingress = ((_status(ing).get("loadBalancer") or {}).get("ingress")) or []
    # kube-apiserver prints its Tables wide: the addresses are never cut short.
    addresses = sorted({point.get("ip") or point.get("hostname") for point in ingress
                        if point.get("ip") or point.get("hostname")})
    return [_meta(ing).get("name", ""), spec.get("ingressClassName") or "<none>",
            _ingress_hosts(spec.get("rules") or []), ",".join(addresses), "80, 443" if spec.get("tls") else "80",
            age(ing, now)]


def _ingress_class_row(ic: dict, now: float) -> list[Cell]:
    spec = _spec(ic)
    parameters = spec.get("parameters")
    text = "<none>"
    if isinstance(parameters, dict):
        group = f".{parameters['apiGroup']}" if parameters.get("apiGroup") else ""
        text = f"{parameters.get('kind', '')}{group}/{parameters.get('name', '')}"
    return [_meta(ic).get("name", ""), spec.get("controller") or "", text, age(ic, now)]


def _controller_revision_row(revision: dict, now: float) -> list[Cell]:
    controller = "<none>"
    for ref in _meta(revision).get("ownerReferences") or []:
        if ref.get("controller"):
            group = str(ref.get("apiVersion") or "").rpartition("/")[0]
            controller = f"{str(ref.get('kind') or '').lower()}{'.' + group if group else ''}/{ref.get('name', '')}"
    return [_meta(revision).get("name", ""), controller, revision.get("revision", 0), age(revision, now)]


def _default_row(obj: dict, now: float) -> list[Cell]:
    return [_meta(obj).get("name", ""), _meta(obj).get("creationTimestamp") or ""]


# --- the columns of each kind -------------------------------------------------------------------------

_NAME = Column("Name", (_META, "name"), format="name")
_AGE = Column("Age", (_META, "creationTimestamp"))
_TEMPLATE_CONTAINERS = Column("Containers", "Names of each container in the template.", priority=1)
_TEMPLATE_IMAGES = Column("Images", "Images referenced by each container in the template.", priority=1)

def _age_and_template(spec_definition: str) -> tuple[Column, ...]:
    """The last columns of a workload with a pod template and a selector."""
    return (_AGE, _TEMPLATE_CONTAINERS, _TEMPLATE_IMAGES, Column("Selector", (spec_definition, "selector"), priority=1))


POD = Printer((
    _NAME,
    Column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", "The aggregate status of the containers in this pod."),
    Column("Restarts", "The number of times the containers in this pod have been restarted and when the last "
                       "container in this pod has restarted."),
    _AGE,
    Column("IP", (_CORE + "PodStatus", "podIP"), priority=1),
    Column("Node", (_CORE + "PodSpec", "nodeName"), priority=1),
    Column("Nominated Node", (_CORE + "PodStatus", "nominatedNodeName"), priority=1),
    Column("Readiness Gates", (_CORE + "PodSpec", "readinessGates"), priority=1),
), _pod_row)

SERVICE = Printer((
    _NAME,
    Column("Type", (_CORE + "ServiceSpec", "type")),
    Column("Cluster-IP", (_CORE + "ServiceSpec", "clusterIP")),
    Column("External-IP", (_CORE + "ServiceSpec", "externalIPs")),
    Column("Port(s)", (_CORE + "ServiceSpec", "ports")),
    _AGE,
    Column("Selector", (_CORE + "ServiceSpec", "selector"), priority=1),
), _service_row)

NODE = Printer((
    _NAME,
    Column("Status", "The status of the node"),
    Column("Roles", "The roles of the node"),
    _AGE,
    Column("Version", (_CORE + "NodeSystemInfo", "kubeletVersion")),
    Column("Internal-IP", (_CORE + "NodeStatus", "addresses"), priority=1),
    Column("External-IP", (_CORE + "NodeStatus", "addresses"), priority=1),
    Column("OS-Image", (_CORE + "NodeSystemInfo", "osImage"), priority=1),
    Column("Kernel-Version", (_CORE + "NodeSystemInfo", "kernelVersion"), priority=1),
    Column("Container-Runtime", (_CORE + "NodeSystemInfo", "containerRuntimeVersion"), priority=1),
), _node_row)

NAMESPACE = Printer((_NAME, Column("Status", "The status of the namespace"), _AGE), _namespace_row)

ENDPOINTS = Printer((_NAME, Column("Endpoints", (_CORE + "Endpoints", "subsets")), _AGE), _endpoints_row)

ENDPOINT_SLICE = Printer((
    _NAME,
    Column("AddressType", ("io.k8s.api.discovery.v1.EndpointSlice", "addressType")),
    Column("Ports", ("io.k8s.api.discovery.v1.EndpointSlice", "ports")),
    Column("Endpoints", ("io.k8s.api.discovery.v1.EndpointSlice", "endpoints")),
    _AGE,
), _endpoint_slice_row)

NETWORK_POLICY = Printer((
    _NAME, Column("Pod-Selector", ("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector")), _AGE,
), _network_policy_row)

DEPLOYMENT = Printer((
    _NAME,
    Column("Ready", "Number of the pod with ready state"),
    Column("Up-to-date", (_APPS + "DeploymentStatus", "updatedReplicas")),
    Column("Available", (_APPS + "DeploymentStatus", "availableReplicas")),
    *_age_and_template(_APPS + "DeploymentSpec"),
), _deployment_row)

REPLICA_SET = Printer((
    _NAME,
    Column("Desired", (_APPS + "ReplicaSetSpec", "replicas"), type="integer"),
    Column("Current", (_APPS + "ReplicaSetStatus", "replicas"), type="integer"),
    Column("Ready", (_APPS + "ReplicaSetStatus", "readyReplicas"), type="integer"),
    *_age_and_template(_APPS + "ReplicaSetSpec"),
), _replica_set_row)

STATEFUL_SET = Printer((
    _NAME, Column("Ready", "Number of the pod with ready state"), _AGE, _TEMPLATE_CONTAINERS, _TEMPLATE_IMAGES,
), _stateful_set_row)

DAEMON_SET = Printer((
    _NAME,
    Column("Desired", (_APPS + "DaemonSetStatus", "desiredNumberScheduled"), type="integer"),
    Column("Current", (_APPS + "DaemonSetStatus", "currentNumberScheduled"), type="integer"),
    Column("Ready", (_APPS + "DaemonSetStatus", "numberReady"), type="integer"),
    Column("Up-to-date", (_APPS + "DaemonSetStatus", "updatedNumberScheduled"), type="integer"),
    Column("Available", (_APPS + "DaemonSetStatus", "numberAvailable"), type="integer"),
    Column("Node Selector", (_CORE + "PodSpec", "nodeSelector")),
    *_age_and_template(_APPS + "DaemonSetSpec"),
), _daemon_set_row)

LEASE = Printer((_NAME, Column("Holder", ("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")), _AGE), _lease_row)

ROLE = Printer((_NAME, Column("Created At", (_META, "creationTimestamp"), type="date")), _role_row)

ROLE_BINDING = Printer((
    _NAME,
    Column("Role", ("io.k8s.api.rbac.v1.RoleBinding", "roleRef")),
    _AGE,
    Column("Users", "Users in the roleBinding", priority=1),
    Column("Groups", "Groups in the roleBinding", priority=1),
    Column("ServiceAccounts", "ServiceAccounts in the roleBinding", priority=1),
), _role_binding_row)

EVENT = Printer((
    Column("Last Seen", (_CORE + "Event", "lastTimestamp")),
    Column("Type", (_CORE + "Event", "type")),
    Column("Reason", (_CORE + "Event", "reason")),
    Column("Object", (_CORE + "Event", "involvedObject")),
    Column("Subobject", (_CORE + "ObjectReference", "fieldPath"), priority=1),
    Column("Source", (_CORE + "Event", "source"), priority=1),
    Column("Message", (_CORE + "Event", "message")),
    Column("First Seen", (_CORE + "Event", "firstTimestamp"), priority=1),
    Column("Count", (_CORE + "Event", "count"), priority=1),
    Column("Name", (_META, "name"), format="name", priority=1),
), _event_row)

CONFIG_MAP = Printer((_NAME, Column("Data", (_CORE + "ConfigMap", "data")), _AGE), _config_map_row)

SECRET = Printer((
    _NAME, Column("Type", (_CORE + "Secret", "type")), Column("Data", (_CORE + "Secret", "data")), _AGE,
), _secret_row)

SERVICE_ACCOUNT = Printer((_NAME, Column("Secrets", (_CORE + "ServiceAccount", "secrets")), _AGE),
                          _service_account_row)

RESOURCE_QUOTA = Printer((
    _NAME, _AGE,
    Column("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
    Column("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of "
                    "contention on the node."),
), _resource_quota_row)

JOB = Printer((
    _NAME,
    Column("Status", "Status of the job."),
    Column("Completions", ("io.k8s.api.batch.v1.JobStatus", "succeeded")),
    Column("Duration", "Time required to complete the job."),
    _AGE,
    _TEMPLATE_CONTAINERS,
    _TEMPLATE_IMAGES,
    Column("Selector", ("io.k8s.api.batch.v1.JobSpec", "selector"), priority=1),
), _job_row)

CRON_JOB = Printer((
    _NAME,
    Column("Schedule", ("io.k8s.api.batch.v1.CronJobSpec", "schedule")),
    Column("Timezone", ("io.k8s.api.batch.v1.CronJobSpec", "timeZone")),
    Column("Suspend", ("io.k8s.api.batch.v1.CronJobSpec", "suspend"), type="boolean"),
    Column("Active", ("io.k8s.api.batch.v1.CronJobStatus", "active"), type="integer"),
    Column("Last Schedule", ("io.k8s.api.batch.v1.CronJobStatus", "lastScheduleTime")),
    _AGE,
    _TEMPLATE_CONTAINERS,
    _TEMPLATE_IMAGES,
    Column("Selector", ("io.k8s.api.batch.v1.JobSpec", "selector"), priority=1),
), _cron_job_row)

INGRESS = Printer((
    _NAME,
    Column("Class", "The name of the IngressClass resource that should be used for ingress"),
    Column("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
    Column("Address", "Address is a list containing ingress points for the load-balancer"),
    Column("Ports", "Ports of TLS configurations that open"),
    _AGE,
), _ingress_row)

INGRESS_CLASS = Printer((
    _NAME,
    Column("Controller", "Controller that is responsible for handling this class"),
    Column("Parameters", "A reference to a resource with additional parameters"),
    _AGE,
), _ingress_class_row)

CONTROLLER_REVISION = Printer((
    _NAME,
    Column("Controller", "Controller of the object"),
    Column("Revision", (_APPS + "ControllerRevision", "revision")),
    _AGE,
), _controller_revision_row)

# kube-apiserver's table for a kind without its own printer (rest.NewDefaultTableConvertor).
DEFAULT = Printer((_NAME, Column("Created At", (_META, "creationTimestamp"), type="date")), _default_row)


# --- tables -------------------------------------------------------------------------------------------


@cache
def column_definitions(printer: Printer) -> tuple[dict, ...]:
    """The Table's columnDefinitions (computed once per printer; not to be changed by callers)."""
    return tuple(column.definition() for column in printer.columns)


def table_rows(printer: Printer | None, objects: Iterable[dict], now: float, *, wide: bool = False,
               with_namespace: bool = False) -> list[list[str]]:
    """Header and rows as kubectl prints a Table: priority-1 columns only when wide; with_namespace adds
    kubectl -A's NAMESPACE column."""
    printer = printer or DEFAULT
    shown = [i for i, column in enumerate(printer.columns) if wide or column.priority == 0]
    rows = [(["NAMESPACE"] if with_namespace else []) + [printer.columns[i].name.upper() for i in shown]]
    for obj in objects:
        cells = printer.row(obj, now)
        prefix = [_meta(obj).get("namespace", "")] if with_namespace else []
        rows.append(prefix + [str(cells[i]) for i in shown])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
