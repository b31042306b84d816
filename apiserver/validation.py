"""Validation of the kinds podnet serves, after Kubernetes' pkg/apis/*/validation.

Pure: `validate(kind_name, obj, limits)` returns the field errors (Status causes) of a defaulted
object; an empty list means valid. The object's structure (which fields exist, of which types) has
already been decoded against the kind's schema (podnet/api/openapi/structure.py), as kube-apiserver
decodes into its Go types before validating: what is left here are the semantic rules. Messages and reasons are Kubernetes' own (`Required value`,
`Invalid value: 70000: must be between 1 and 65535, inclusive`, `Unsupported value: ...`), and fields
are written as Kubernetes writes them (`spec.ingress[0].ports[1].endPort`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from podnet.apiserver import (
    configkinds,
    controllerrevisionkind,
    cronjobkind,
    ingresskinds,
    limitrange,
    quota,
    serviceaddresses,
)
from podnet.apiserver.rbac import validation as rbac_validation
from podnet.apiserver.status import Cause

from podnet.api.selectors import SelectorError, from_label_selector, validate_key, validate_value

PROTOCOLS = ("TCP", "UDP", "SCTP")

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ANNOTATIONS_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What validation needs from the server's configuration."""

    node_port_range: tuple[int, int] = (30000, 32767)
    service_cidr: str = "10.96.0.0/12"
    cluster_cidr: str = "10.244.0.0/16"
    api_addresses: tuple[str, ...] = ()  # where the API server is reached: no Service may claim them


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else repr(value)


class Errors:
    """Collects causes with Kubernetes' wording (field.ErrorList)."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, field: str, detail: str = "") -> None:
        self.causes.append(Cause(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")))

    def invalid(self, field: str, value: object, detail: str) -> None:
        self.causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {_show(value)}: {detail}"))

    def not_supported(self, field: str, value: object, supported: tuple[str, ...]) -> None:
        listed = ", ".join(json.dumps(s) for s in supported)
        self.causes.append(
            Cause(field, "FieldValueNotSupported", f"Unsupported value: {_show(value)}: supported values: {listed}")
        )

    def duplicate(self, field: str, value: object) -> None:
        self.causes.append(Cause(field, "FieldValueDuplicate", f"Duplicate value: {_show(value)}"))

    def forbidden(self, field: str, detail: str) -> None:
        self.causes.append(Cause(field, "FieldValueForbidden", f"Forbidden: {detail}"))

    def too_many(self, field: str, actual: int, limit: int) -> None:
        self.causes.append(Cause(field, "FieldValueTooMany", f"Too many: {actual}: must have at most {limit} items"))


# --- small checks -------------------------------------------------------------------------------------


def _name_error(value: str, kind: str) -> str | None:
    if kind == "label":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1123_LABEL.fullmatch(value):
            return (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')"
            )
    elif kind == "dns1035":
        if len(value) > 63:
            return "must be no more than 63 characters"
        if not _DNS1035_LABEL.fullmatch(value):
            return (
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123')"
            )
    else:
        if len(value) > 253:
            return "must be no more than 253 characters"
        if not _DNS1123_SUBDOMAIN.fullmatch(value):
            return (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character (e.g. 'example.com')"
            )
    return None


def _port_name_error(name: str) -> str | None:
    """IANA_SVC_NAME: the name of a port that a Service's targetPort or a policy's port may refer to."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not _IANA_SVC_NAME.fullmatch(name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if not re.search("[a-z]", name):
        return "must contain at least one letter (a-z)"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_port_number(errors: Errors, field: str, value: object, *, low: int = 1) -> None:
    if not _is_int(value) or not low <= value <= 65535:
        errors.invalid(field, value, f"must be between {low} and 65535, inclusive")


def _check_int_or_port_name(errors: Errors, field: str, value: object) -> None:
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            _check_port_number(errors, field, int(value))
        elif detail := _port_name_error(value):
            errors.invalid(field, value, detail)
    else:
        _check_port_number(errors, field, value)


def _check_protocol(errors: Errors, field: str, value: object) -> None:
    if value not in PROTOCOLS:
        errors.not_supported(field, value, PROTOCOLS)


def _check_enum(errors: Errors, field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        errors.not_supported(field, value, allowed)


def _check_string_map(errors: Errors, field: str, value: object, *, label_values: bool) -> dict:
    value = value or {}
    for key, item in value.items():
        try:
            validate_key(str(key))
        except SelectorError:
            errors.invalid(
                field,
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character, with an optional DNS subdomain prefix and '/'",
            )
        if label_values:
            try:
                validate_value(item or "")
            except SelectorError:
                errors.invalid(
                    field,
                    item,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character",
                )
    return value


def _check_selector(errors: Errors, field: str, value: object) -> None:
    if value is None:
        return
    try:
        from_label_selector(value)  # type: ignore[arg-type]
    except SelectorError as e:
        errors.invalid(field, value, str(e))


def _list(value: object) -> list:
    """A list field's items; an absent (or null) list is empty."""
    return value or []  # type: ignore[return-value]


def _distinct_choices(errors: Errors, field: str, value: object, allowed: tuple[str, ...], most: int) -> list:
    """A list of at most `most` entries, each one of `allowed` and none twice; returns the list."""
    items = _list(value)
    if len(items) > most:
        errors.too_many(field, len(items), most)
    seen: set[object] = set()
    for i, item in enumerate(items):
        if item not in allowed:
            errors.not_supported(f"{field}[{i}]", item, allowed)
        elif item in seen:
            errors.duplicate(f"{field}[{i}]", item)
        seen.add(item)
    return items


def _dict_items(field: str, value: object) -> list[tuple[str, dict]]:
    """Each object of a list field with its path; a null item is an empty object, as Go decodes it."""
    return [(f"{field}[{i}]", item or {}) for i, item in enumerate(_list(value))]


def _parse_cidr(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _check_ip(errors: Errors, field: str, value: object) -> None:
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        errors.invalid(field, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")


# --- metadata -----------------------------------------------------------------------------------------

# Which name syntax each kind uses (Kubernetes' ValidateNameFunc per kind).
_NAME_SYNTAX = {"Namespace": "label", "Service": "dns1035"}


def validate_metadata(errors: Errors, kind_name: str, obj: dict, namespaced: bool) -> None:
    metadata = obj["metadata"]
    name = metadata.get("name")
    if not name:
        errors.required("metadata.name", "name or generateName is required")
    elif detail := _name_error(name, _NAME_SYNTAX.get(kind_name, "subdomain")):
        errors.invalid("metadata.name", name, detail)
    if namespaced:
        namespace = metadata.get("namespace")
        if not namespace:
            errors.required("metadata.namespace")
        elif detail := _name_error(namespace, "label"):
            errors.invalid("metadata.namespace", namespace, detail)
    elif metadata.get("namespace"):
        errors.forbidden("metadata.namespace", "not allowed on this type")
    _check_string_map(errors, "metadata.labels", metadata.get("labels"), label_values=True)
    annotations = _check_string_map(errors, "metadata.annotations", metadata.get("annotations"), label_values=False)
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > _ANNOTATIONS_LIMIT:
        errors.causes.append(
            Cause("metadata.annotations", "FieldValueTooLong", f"Too long: must have at most {_ANNOTATIONS_LIMIT} bytes")
        )


# --- Pod ----------------------------------------------------------------------------------------------

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")


def _validate_containers(errors: Errors, field: str, value: object, names: set[str], *, required: bool) -> None:
    containers = _dict_items(field, value)
    if required and not containers:
        errors.required(field)
    for path, container in containers:
        name = container.get("name")
        if not name:
            errors.required(f"{path}.name")
        elif detail := _name_error(name, "label"):
            errors.invalid(f"{path}.name", name, detail)
        elif name in names:
            errors.duplicate(f"{path}.name", name)
        else:
            names.add(name)
        if not container.get("image"):
            errors.required(f"{path}.image")
        port_names: set[str] = set()
        for port_path, port in _dict_items(f"{path}.ports", container.get("ports")):
            if "containerPort" not in port:
                errors.required(f"{port_path}.containerPort")
            else:
                _check_port_number(errors, f"{port_path}.containerPort", port["containerPort"])
            if port.get("hostPort") not in (None, 0):
                _check_port_number(errors, f"{port_path}.hostPort", port["hostPort"])
            _check_protocol(errors, f"{port_path}.protocol", port.get("protocol"))
            port_name = port.get("name")
            if port_name is not None:
                if detail := _port_name_error(port_name):
                    errors.invalid(f"{port_path}.name", port_name, detail)
                elif port_name in port_names:
                    errors.duplicate(f"{port_path}.name", port_name)
                else:
                    port_names.add(port_name)


def validate_pod_spec(errors: Errors, field: str, spec: object) -> None:
    if spec is None:
        errors.required(field)
        return
    names: set[str] = set()
    _validate_containers(errors, f"{field}.containers", spec.get("containers"), names, required=True)
    _validate_containers(errors, f"{field}.initContainers", spec.get("initContainers"), names, required=False)
    _check_enum(errors, f"{field}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES)
    _check_enum(errors, f"{field}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES)
    _check_string_map(errors, f"{field}.nodeSelector", spec.get("nodeSelector"), label_values=True)
    node_name = spec.get("nodeName")
    if node_name and _name_error(node_name, "subdomain"):
        errors.invalid(f"{field}.nodeName", node_name, "must be a valid node name")
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not _is_int(grace) or grace < 0):
        errors.invalid(f"{field}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0")
    for path, toleration in _dict_items(f"{field}.tolerations", spec.get("tolerations")):
        effect = toleration.get("effect")
        if effect:
            _check_enum(errors, f"{path}.effect", effect, ("NoSchedule", "PreferNoSchedule", "NoExecute"))


def validate_pod(errors: Errors, obj: dict, limits: Limits) -> None:
    validate_pod_spec(errors, "spec", obj.get("spec"))
    status = obj.get("status") or {}
    for field in ("podIP", "hostIP"):
        if status.get(field):
            _check_ip(errors, f"status.{field}", status[field])


# --- Service ------------------------------------------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
SESSION_AFFINITIES = ("None", "ClientIP")
IP_FAMILIES = ("IPv4", "IPv6")


def validate_service(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = obj.get("spec")
    if spec is None:
        errors.required("spec")
        return
    service_type = spec.get("type")
    _check_enum(errors, "spec.type", service_type, SERVICE_TYPES)
    cluster_ip = spec.get("clusterIP")
    headless = cluster_ip == "None"
    ports = _dict_items("spec.ports", spec.get("ports"))
    if not ports and service_type != "ExternalName" and not headless:
        errors.required("spec.ports")
    if service_type == "ExternalName":
        external_name = spec.get("externalName")
        if not external_name:
            errors.required("spec.externalName")
        elif detail := _name_error(external_name.rstrip("."), "subdomain"):
            errors.invalid("spec.externalName", external_name, detail)
    elif cluster_ip not in (None, "", "None"):
        try:
            address = ipaddress.ip_address(cluster_ip)
        except ValueError:
            errors.invalid("spec.clusterIPs[0]", cluster_ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        else:
            service_cidr = ipaddress.ip_network(limits.service_cidr)
            if address.version == service_cidr.version and address not in service_cidr:
                errors.invalid(
                    "spec.clusterIPs",
                    [cluster_ip],
                    f"failed to allocate IP {cluster_ip}: provided IP is not in the valid range. "
                    f"The range of valid IPs is {limits.service_cidr}",
                )
    cluster_ips = spec.get("clusterIPs")
    if cluster_ip and cluster_ips and cluster_ips[0] != cluster_ip:
        errors.invalid("spec.clusterIPs", cluster_ips, "element [0] must match clusterIP")
    if headless and service_type in ("NodePort", "LoadBalancer"):
        errors.invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {service_type} services")
    node_ports_allowed = service_type in ("NodePort", "LoadBalancer")
    low, high = limits.node_port_range
    names: set[str] = set()
    port_protocols: set[tuple[object, object]] = set()
    node_ports: set[tuple[object, object]] = set()
    for path, port in ports:
        name = port.get("name")
        if len(ports) > 1 and not name:
            errors.required(f"{path}.name")
        if name:
            if detail := _name_error(name, "label"):
                errors.invalid(f"{path}.name", name, detail)
            elif name in names:
                errors.duplicate(f"{path}.name", name)
            else:
                names.add(name)
        _check_port_number(errors, f"{path}.port", port.get("port"))
        protocol = port.get("protocol")
        _check_protocol(errors, f"{path}.protocol", protocol)
        if (port.get("port"), protocol) in port_protocols:
            errors.duplicate(path, {"port": port.get("port"), "protocol": protocol})
        port_protocols.add((port.get("port"), protocol))
        if "targetPort" in port and not headless:
            _check_int_or_port_name(errors, f"{path}.targetPort", port["targetPort"])
        node_port = port.get("nodePort")
        if node_port not in (None, 0):
            if not node_ports_allowed:
                errors.forbidden(f"{path}.nodePort", f"may not be used when `type` is '{service_type}'")
            elif not _is_int(node_port) or not low <= node_port <= high:
                errors.invalid(
                    f"{path}.nodePort",
                    node_port,
                    f"provided port is not in the valid range. The range of valid ports is {low}-{high}",
                )
            elif (node_port, protocol) in node_ports:
                errors.duplicate(f"{path}.nodePort", node_port)
            else:
                node_ports.add((node_port, protocol))
    _check_string_map(errors, "spec.selector", spec.get("selector"), label_values=True)
    affinity = spec.get("sessionAffinity")
    _check_enum(errors, "spec.sessionAffinity", affinity, SESSION_AFFINITIES)
    if affinity == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        if not _is_int(timeout) or not 0 < timeout <= 86400:
            errors.invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout, "must be greater than 0 and less than 86400"
            )
    elif spec.get("sessionAffinityConfig"):
        errors.forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None")
    external_policy = spec.get("externalTrafficPolicy")
    if node_ports_allowed:
        _check_enum(errors, "spec.externalTrafficPolicy", external_policy, TRAFFIC_POLICIES)
    elif external_policy:
        errors.invalid(
            "spec.externalTrafficPolicy", external_policy, "may only be set for externally-accessible services"
        )
    if service_type != "ExternalName":
        _check_enum(errors, "spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"), TRAFFIC_POLICIES)
    families = _distinct_choices(errors, "spec.ipFamilies", spec.get("ipFamilies"), IP_FAMILIES, 2)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None:
        _check_enum(errors, "spec.ipFamilyPolicy", policy, ("SingleStack", "PreferDualStack", "RequireDualStack"))
    if policy == "SingleStack" and len(families) > 1:
        errors.invalid("spec.ipFamilies", families, "when spec.ipFamilyPolicy is SingleStack, may have only one entry")
    special = list(serviceaddresses.special_address_errors(obj))
    protected = serviceaddresses.Protected(limits.cluster_cidr, limits.service_cidr, limits.api_addresses)
    for field, value, detail in special:
        errors.invalid(field, value, detail)
    for field, value, detail in serviceaddresses.shadowing(obj, protected):
        if field not in {f for f, _, _ in special}:
            errors.invalid(field, value, detail)


# --- NetworkPolicy ------------------------------------------------------------------------------------

POLICY_TYPES = ("Ingress", "Egress")


def _validate_policy_port(errors: Errors, path: str, port: dict) -> None:
    if "protocol" in port:
        _check_protocol(errors, f"{path}.protocol", port["protocol"])
    value = port.get("port")
    if value is not None:
        _check_int_or_port_name(errors, f"{path}.port", value)
    end_port = port.get("endPort")
    if end_port is None:
        return
    if value is None:
        errors.required(f"{path}.port", "must be specified when endPort is specified")
    elif not _is_int(value):
        errors.forbidden(f"{path}.endPort", "may not be specified when `port` is non-numeric")
    elif not _is_int(end_port) or end_port > 65535:
        errors.invalid(f"{path}.endPort", end_port, "must be between 1 and 65535, inclusive")
    elif end_port < value:
        errors.invalid(f"{path}.endPort", end_port, "must be greater than or equal to `port`")


def _validate_ip_block(errors: Errors, path: str, block: dict) -> None:
    cidr_text = block.get("cidr")
    if not cidr_text:
        errors.required(f"{path}.cidr")
        return
    cidr = _parse_cidr(cidr_text)
    if cidr is None:
        errors.invalid(f"{path}.cidr", cidr_text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
        return
    for i, except_text in enumerate(_list(block.get("except"))):
        field = f"{path}.except[{i}]"
        excepted = _parse_cidr(except_text)
        if excepted is None:
            errors.invalid(field, except_text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
        elif excepted.version != cidr.version or not excepted.subnet_of(cidr) or excepted.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            errors.invalid(field, except_text, "must be a strict subset of `cidr`")


def _validate_peers(errors: Errors, field: str, peers: object) -> None:
    for path, peer in _dict_items(field, peers):
        selectors = [k for k in ("podSelector", "namespaceSelector") if peer.get(k) is not None]
        block = peer.get("ipBlock")
        if block is None and not selectors:
            errors.required(path, "must specify a peer")
        elif block is not None and selectors:
            errors.forbidden(path, "may not specify more than 1 peer type")
        for key in selectors:
            _check_selector(errors, f"{path}.{key}", peer[key])
        if block is not None:
            _validate_ip_block(errors, f"{path}.ipBlock", block)


def validate_network_policy(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = obj.get("spec")
    if spec is None:
        errors.required("spec")
        return
    _check_selector(errors, "spec.podSelector", spec.get("podSelector"))
    for direction, peer_key in (("ingress", "from"), ("egress", "to")):
        for path, rule in _dict_items(f"spec.{direction}", spec.get(direction)):
            for port_path, port in _dict_items(f"{path}.ports", rule.get("ports")):
                _validate_policy_port(errors, port_path, port)
            _validate_peers(errors, f"{path}.{peer_key}", rule.get(peer_key))
    _distinct_choices(errors, "spec.policyTypes", spec.get("policyTypes"), POLICY_TYPES, 2)


# --- the other kinds ----------------------------------------------------------------------------------


def validate_node(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = (obj.get("spec") or {})
    cidrs = list(_list(spec.get("podCIDRs")))
    if spec.get("podCIDR"):
        cidrs.insert(0, spec["podCIDR"])
    for cidr in cidrs:
        if _parse_cidr(cidr) is None:
            errors.invalid("spec.podCIDRs", cidr, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    for path, taint in _dict_items("spec.taints", spec.get("taints")):
        if not taint.get("key"):
            errors.required(f"{path}.key")
        _check_enum(errors, f"{path}.effect", taint.get("effect"), ("NoSchedule", "PreferNoSchedule", "NoExecute"))
    status = (obj.get("status") or {})
    for path, address in _dict_items("status.addresses", status.get("addresses")):
        if not address.get("type"):
            errors.required(f"{path}.type")


def validate_endpoints(errors: Errors, obj: dict, limits: Limits) -> None:
    for path, subset in _dict_items("subsets", obj.get("subsets")):
        for key in ("addresses", "notReadyAddresses"):
            for address_path, address in _dict_items(f"{path}.{key}", subset.get(key)):
                _check_ip(errors, f"{address_path}.ip", address.get("ip"))
        for port_path, port in _dict_items(f"{path}.ports", subset.get("ports")):
            _check_port_number(errors, f"{port_path}.port", port.get("port"))
            _check_protocol(errors, f"{port_path}.protocol", port.get("protocol"))


def validate_endpoint_slice(errors: Errors, obj: dict, limits: Limits) -> None:
    address_type = obj.get("addressType")
    _check_enum(errors, "addressType", address_type, ("IPv4", "IPv6", "FQDN"))
    endpoints = _dict_items("endpoints", obj.get("endpoints"))
    if len(endpoints) > 1000:
        errors.too_many("endpoints", len(endpoints), 1000)
    for path, endpoint in endpoints:
        addresses = _list(endpoint.get("addresses"))
        if not addresses:
            errors.required(f"{path}.addresses")
        if address_type in ("IPv4", "IPv6"):
            for i, address in enumerate(addresses):
                _check_ip(errors, f"{path}.addresses[{i}]", address)
    names: set[object] = set()
    for path, port in _dict_items("ports", obj.get("ports")):
        if port.get("port") is not None:
            _check_port_number(errors, f"{path}.port", port["port"], low=0)
        _check_protocol(errors, f"{path}.protocol", port.get("protocol"))
        name = port.get("name", "")
        if name in names:
            errors.duplicate(f"{path}.name", name)
        names.add(name)


def validate_lease(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = (obj.get("spec") or {})
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        errors.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")


class _Plain:
    """A value Kubernetes prints bare in a message (an IntOrString: `25%`, not `"25%"`)."""

    def __init__(self, value: object):
        self.value = value

    def __repr__(self) -> str:
        return str(self.value)


def _check_nonnegative(errors: Errors, field: str, value: object) -> None:
    if value is not None and (not _is_int(value) or value < 0):
        errors.invalid(field, value, "must be greater than or equal to 0")


def _validate_workload_spec(errors: Errors, spec: dict, kind_word: str = "deployment") -> None:
    """What Deployments and ReplicaSets share (ValidateReplicaSetSpec, ValidateDeploymentSpec): replicas,
    and what every workload has (`_validate_template_spec`)."""
    replicas = spec.get("replicas")
    if not _is_int(replicas) or replicas < 0:
        errors.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
    _validate_template_spec(errors, spec, kind_word)


def _validate_template_spec(errors: Errors, spec: dict, kind_word: str) -> None:
    """minReadySeconds, a non-empty selector that picks the template's labels, a template whose pods
    restart Always."""
    _check_nonnegative(errors, "spec.minReadySeconds", spec.get("minReadySeconds"))
    _validate_selected_template(errors, spec, ("Always",), empty_selector=kind_word)


def _validate_selected_template(errors: Errors, spec: dict, restart_policies: tuple[str, ...], *,
                                empty_selector: str | None = None) -> None:
    """A selector that picks the pod template's labels, and the template's pods, restarting as
    `restart_policies` allow; an empty selector is refused for the workload named `empty_selector`."""
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector is None:
        errors.required("spec.selector")
    else:
        try:
            compiled = from_label_selector(selector)
        except SelectorError as e:
            errors.invalid("spec.selector", selector, str(e))
        else:
            if compiled.empty and empty_selector:
                errors.invalid("spec.selector", selector, f"empty selector is invalid for {empty_selector}")
            elif not compiled.matches(labels):
                errors.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    _check_string_map(errors, "spec.template.metadata.labels", labels, label_values=True)
    validate_pod_spec(errors, "spec.template.spec", template.get("spec"))
    restart = (template.get("spec") or {}).get("restartPolicy")
    if restart is not None and restart not in restart_policies:
        errors.not_supported("spec.template.spec.restartPolicy", restart, restart_policies)


_PERCENT = re.compile(r"[0-9]+%")


def _int_or_percent(errors: Errors, field: str, value: object) -> int:
    """ValidatePositiveIntOrPercent; returns the number (of the percentage too) for further checks."""
    if isinstance(value, str):
        if not _PERCENT.fullmatch(value):
            errors.invalid(field, _Plain(value), "a valid percent string must be a numeric string followed by an "
                                                 "ending '%' (e.g. '1%',  or '93%')")
            return -1
        return int(value[:-1])
    if not _is_int(value) or value < 0:
        errors.invalid(field, value, "must be greater than or equal to 0")
        return -1
    return value


def _validate_strategy(errors: Errors, strategy: object) -> None:
    if not isinstance(strategy, dict):
        return
    kind = strategy.get("type")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errors.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") if isinstance(strategy.get("rollingUpdate"), dict) else {}
        unavailable = rolling.get("maxUnavailable", "25%")
        field = "spec.strategy.rollingUpdate.maxUnavailable"
        unavailable_value = _int_or_percent(errors, field, unavailable)
        surge_value = _int_or_percent(errors, "spec.strategy.rollingUpdate.maxSurge", rolling.get("maxSurge", "25%"))
        if unavailable_value == 0 and surge_value == 0:
            errors.invalid(field, _Plain(unavailable), "may not be 0 when `maxSurge` is 0")
        if isinstance(unavailable, str) and unavailable_value > 100:
            errors.invalid(field, _Plain(unavailable), "must not be greater than 100%")
    else:
        errors.not_supported("spec.strategy.type", kind, ("Recreate", "RollingUpdate"))


def _workload_spec(errors: Errors, obj: dict) -> dict | None:
    """The spec of a Deployment or ReplicaSet with what they share validated; None when there is none."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        return None
    _validate_workload_spec(errors, spec)
    return spec


def validate_deployment(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = _workload_spec(errors, obj)
    if spec is None:
        return
    _validate_strategy(errors, spec.get("strategy"))
    _check_nonnegative(errors, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    deadline = spec.get("progressDeadlineSeconds")
    _check_nonnegative(errors, "spec.progressDeadlineSeconds", deadline)
    min_ready = spec.get("minReadySeconds") or 0
    if _is_int(deadline) and _is_int(min_ready) and deadline <= min_ready:
        errors.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")


def validate_replica_set(errors: Errors, obj: dict, limits: Limits) -> None:
    _workload_spec(errors, obj)


def _spec_of(errors: Errors, obj: dict) -> dict | None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        return None
    return spec


def validate_stateful_set(errors: Errors, obj: dict, limits: Limits) -> None:
    """ValidateStatefulSetSpec, in its order, without volume claim templates (podnet has no volumes)."""
    spec = _spec_of(errors, obj)
    if spec is None:
        return
    policy = spec.get("podManagementPolicy")
    if policy not in ("OrderedReady", "Parallel"):
        errors.not_supported("spec.podManagementPolicy", policy, ("OrderedReady", "Parallel"))
    strategy = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    kind = strategy.get("type")
    if kind == "OnDelete" and strategy.get("rollingUpdate") is not None:
        errors.invalid("spec.updateStrategy.rollingUpdate", strategy["rollingUpdate"],
                       "only allowed for updateStrategy 'RollingUpdate'")
    elif kind == "RollingUpdate":
        _check_nonnegative(errors, "spec.updateStrategy.rollingUpdate.partition",
                           (strategy.get("rollingUpdate") or {}).get("partition"))
    elif kind != "OnDelete":
        errors.not_supported("spec.updateStrategy.type", kind, ("OnDelete", "RollingUpdate"))
    _check_nonnegative(errors, "spec.ordinals.start", (spec.get("ordinals") or {}).get("start"))
    _validate_workload_spec(errors, spec, "statefulset")


def validate_daemon_set(errors: Errors, obj: dict, limits: Limits) -> None:
    spec = _spec_of(errors, obj)
    if spec is None:
        return
    _validate_template_spec(errors, spec, "daemonset")
    strategy = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    kind = strategy.get("type")
    if kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") if isinstance(strategy.get("rollingUpdate"), dict) else {}
        _int_or_percent(errors, "spec.updateStrategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable", 1))
        _int_or_percent(errors, "spec.updateStrategy.rollingUpdate.maxSurge", rolling.get("maxSurge", 0))
    elif kind != "OnDelete":
        errors.not_supported("spec.updateStrategy.type", kind, ("OnDelete", "RollingUpdate"))


def validate_job(errors: Errors, obj: dict, limits: Limits) -> None:
    """ValidateJobSpec: counts not negative, pods that restart OnFailure or Never."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        return
    for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        _check_nonnegative(errors, f"spec.{field}", spec.get(field))
    _validate_selected_template(errors, spec, ("OnFailure", "Never"))


VALIDATORS: dict[str, Callable[[Errors, dict, Limits], None]] = {
    "Pod": validate_pod,
    "Service": validate_service,
    "NetworkPolicy": validate_network_policy,
    "Node": validate_node,
    "Endpoints": validate_endpoints,
    "EndpointSlice": validate_endpoint_slice,
    "Lease": validate_lease,
    "Deployment": validate_deployment,
    "ReplicaSet": validate_replica_set,
    "StatefulSet": validate_stateful_set,
    "DaemonSet": validate_daemon_set,
    "ConfigMap": configkinds.validate_config_map,
    "Secret": configkinds.validate_secret,
    "Job": validate_job,
    "ResourceQuota": quota.validate_resource_quota,
    "LimitRange": limitrange.validate_limit_range,
    "CronJob": cronjobkind.validate_cron_job,
    "ControllerRevision": controllerrevisionkind.validate_controller_revision,
    **ingresskinds.VALIDATORS,
    **rbac_validation.VALIDATORS,
}


# --- updates ------------------------------------------------------------------------------------------

_POD_MUTABLE = (
    "spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
    "`spec.tolerations`, `spec.terminationGracePeriodSeconds`"
)


def _pod_spec_fixed_part(spec: object, *, keep_node_name: bool) -> object:
    """What of a pod spec may not change: everything but images, tolerations and two timers. The node
    name may be set once (the scheduler's binding); after that it is fixed too."""
    if not isinstance(spec, dict):
        return spec
    fixed = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")}
    if not keep_node_name:
        fixed.pop("nodeName", None)
    for key in ("containers", "initContainers"):
        if isinstance(fixed.get(key), list):
            fixed[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in fixed[key]]
    return fixed


def validate_pod_update(errors: Errors, old: dict, new: dict) -> None:
    old_spec, new_spec = old.get("spec"), new.get("spec")
    bound = bool(isinstance(old_spec, dict) and old_spec.get("nodeName"))
    if _pod_spec_fixed_part(old_spec, keep_node_name=bound) != _pod_spec_fixed_part(new_spec, keep_node_name=bound):
        errors.forbidden("spec", f"pod updates may not change fields other than `{_POD_MUTABLE}")


def validate_service_update(errors: Errors, old: dict, new: dict) -> None:
    old_ip = (old.get("spec") or {}).get("clusterIP")
    new_spec = new.get("spec") or {}
    # A Service may become ExternalName (and give its address back), but never change its address.
    if old_ip and new_spec.get("type") != "ExternalName" and new_spec.get("clusterIP") != old_ip:
        errors.invalid("spec.clusterIPs[0]", new_spec.get("clusterIP"), "may not change once set")


def validate_selector_update(errors: Errors, old: dict, new: dict) -> None:
    """Deployments, ReplicaSets and Jobs keep the selector they were created with."""
    old_selector = (old.get("spec") or {}).get("selector")
    new_selector = (new.get("spec") or {}).get("selector") if isinstance(new.get("spec"), dict) else None
    if old_selector != new_selector:
        errors.invalid("spec.selector", new_selector, "field is immutable")


_STATEFUL_SET_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                         "minReadySeconds")


def validate_stateful_set_update(errors: Errors, old: dict, new: dict) -> None:
    """ValidateStatefulSetUpdate: only a few fields of the spec may change."""
    def fixed(obj: dict) -> dict:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        return {k: v for k, v in spec.items() if k not in _STATEFUL_SET_MUTABLE}
    if fixed(old) != fixed(new):
        errors.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                                 "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                                 "'minReadySeconds' are forbidden")


UPDATE_VALIDATORS: dict[str, Callable[[Errors, dict, dict], None]] = {
    "Pod": validate_pod_update,
    "Service": validate_service_update,
    "Deployment": validate_selector_update,
    "ReplicaSet": validate_selector_update,
    "StatefulSet": validate_stateful_set_update,
    "DaemonSet": validate_selector_update,
    "ConfigMap": configkinds.validate_config_map_update,
    "Secret": configkinds.validate_secret_update,
    "Job": validate_selector_update,
    "ControllerRevision": controllerrevisionkind.validate_controller_revision_update,
    **ingresskinds.UPDATE_VALIDATORS,
    **rbac_validation.UPDATE_VALIDATORS,
}


def validate_update(kind_name: str, old: dict, new: dict) -> list[Cause]:
    """What an update may not change, beyond what `validate` checks of the new object."""
    errors = Errors()
    validator = UPDATE_VALIDATORS.get(kind_name)
    if validator is not None:
        validator(errors, old, new)
    return errors.causes


def validate(kind_name: str, obj: dict, limits: Limits, *, namespaced: bool) -> list[Cause]:
    errors = Errors()
    validate_metadata(errors, kind_name, obj, namespaced)
    validator = VALIDATORS.get(kind_name)
    if validator is not None:
        validator(errors, obj, limits)
    return errors.causes
