"""The Services a pod's programs find in their environment, as the kubelet sets them (pkg/kubelet/
kubelet_pods.go getServiceEnvVarMap, pkg/kubelet/envvars): `<NAME>_SERVICE_HOST` and `_SERVICE_PORT`
(and `_SERVICE_PORT_<PORTNAME>` per named port), with the Docker-link variables `<NAME>_PORT`,
`<NAME>_PORT_<port>_<PROTO>` and its `_PROTO`, `_PORT` and `_ADDR`.

Every pod gets the `kubernetes` Service of `default` — what in-cluster clients (`load_incluster_config()`,
client-go's `rest.InClusterConfig`) find the API server by — and, unless `enableServiceLinks` is false, each
Service of its own namespace that has a cluster IP (a Service of its namespace named `kubernetes` wins over
the API server's). The container's own variables are never overridden. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MASTER_NAMESPACE = "default"
MASTER_SERVICE = "kubernetes"


def _variable_name(service_name: str) -> str:
    return service_name.upper().replace("-", "_")


def _has_cluster_ip(service: Mapping) -> bool:
    cluster_ip = (service.get("spec") or {}).get("clusterIP") or ""
    return cluster_ip not in ("", "None")


def visible_services(services: Iterable[Mapping], namespace: str, enable_links: bool) -> list[Mapping]:
    """The Services whose variables a pod in `namespace` gets, by name."""
    chosen: dict[str, Mapping] = {}
    for service in services:
        meta = service.get("metadata") or {}
        name, service_namespace = meta.get("name") or "", meta.get("namespace") or ""
        if not _has_cluster_ip(service):
            continue
        if service_namespace == MASTER_NAMESPACE and name == MASTER_SERVICE:
            chosen.setdefault(name, service)
        elif service_namespace == namespace and enable_links:
            chosen[name] = service
    return [chosen[name] for name in sorted(chosen)]


def service_variables(services: Iterable[Mapping]) -> list[tuple[str, str]]:
    variables: list[tuple[str, str]] = []
    for service in services:
        prefix = _variable_name((service.get("metadata") or {}).get("name") or "")
        spec = service.get("spec") or {}
        ip = spec["clusterIP"]
        ports = spec.get("ports") or []
        variables.append((f"{prefix}_SERVICE_HOST", ip))
        if ports:
            variables.append((f"{prefix}_SERVICE_PORT", str(ports[0].get("port"))))
        for port in ports:
            if port.get("name"):
                variables.append((f"{prefix}_SERVICE_PORT_{_variable_name(port['name'])}", str(port.get("port"))))
        for index, port in enumerate(ports):
            protocol = str(port.get("protocol") or "TCP")
            number = str(port.get("port"))
            url = f"{protocol.lower()}://{ip}:{number}"
            link = f"{prefix}_PORT_{number}_{protocol.upper()}"
            if index == 0:
                variables.append((f"{prefix}_PORT", url))
            variables.extend([(link, url), (f"{link}_PROTO", protocol.lower()), (f"{link}_PORT", number),
                              (f"{link}_ADDR", ip)])
    return variables


def with_services(own: list[tuple[str, str]], pod: Mapping, services: Iterable[Mapping]) -> list[tuple[str, str]]:
    """The container's variables, then those of the Services it sees that it does not set itself."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    enable_links = (pod.get("spec") or {}).get("enableServiceLinks", True) is not False
    defined = {name for name, _ in own}
    extra = [(k, v) for k, v in service_variables(visible_services(services, namespace, enable_links)) if k not in defined]
    return own + extra
