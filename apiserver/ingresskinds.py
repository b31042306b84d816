"""Ingresses and IngressClasses as kube-apiserver validates them (pkg/apis/networking/validation
ValidateIngressSpec, ValidateIngressClass), and the DefaultIngressClass admission step.

- An Ingress has a `defaultBackend` or `rules`. Each backend is a Service (a name and a port by name or by
  number, not both) or a resource, never both. Hosts are DNS names, `*.` wildcards allowed, not IPs.
- Each HTTP path has a `pathType` (Exact, Prefix, ImplementationSpecific); Exact and Prefix paths are
  absolute and clean (no `//`, `/./`, `/../`, `%2f`, no trailing `/.` or `/..`).
- An IngressClass names its `controller` (a domain-prefixed path), which cannot change.
- An Ingress created without a class gets the default IngressClass's name (the one annotated
  `ingressclass.kubernetes.io/is-default-class: "true"`, the newest if several are).

Pure: functions on plain dicts, reporting through validation.Errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from podnet.apiserver.status import Cause

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1035_MESSAGE = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
_PORT_NAME = re.compile(r"[-a-z0-9]+")
_SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                      "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                      "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_WILDCARD_MESSAGE = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which "
                     "must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric "
                     "character (e.g. '*.example.com', regex used for validation is "
                     "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_UNCLEAN = ("//", "/./", "/../", "%2f", "%2F")
_UNCLEAN_ENDINGS = ("/..", "/.")


def _subdomain_error(value: str) -> str | None:
    if len(value) > 253:
        return "must be no more than 253 characters"
    return None if _SUBDOMAIN.fullmatch(value) else _SUBDOMAIN_MESSAGE


def _service_name_error(name: str) -> str | None:
    """ValidateServiceName: a DNS-1035 label."""
    if len(name) > 63:
        return "must be no more than 63 characters"
    return None if _DNS1035_LABEL.fullmatch(name) else _DNS1035_MESSAGE


def _validate_host(errors: Errors, field: str, host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        errors.invalid(field, host, "must be a DNS name, not an IP address")
        return
    if host.startswith("*."):
        if _subdomain_error(host[2:]):
            errors.invalid(field, host, _WILDCARD_MESSAGE)
    elif "*" in host:
        errors.invalid(field, host, _WILDCARD_MESSAGE)
    elif message := _subdomain_error(host):
        errors.invalid(field, host, message)


def _validate_backend(errors: Errors, field: str, backend: dict) -> None:
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        errors.invalid(field, "", "cannot set both resource and service backends")
    elif isinstance(resource, dict):
        for part in ("kind", "name"):
            if not resource.get(part):
                errors.required(f"{field}.resource.{part}")
    elif isinstance(service, dict):
        name = service.get("name")
        if not name:
            errors.required(f"{field}.service.name")
        elif message := _service_name_error(name):
            errors.invalid(f"{field}.service.name", name, message)
        port = service.get("port") if isinstance(service.get("port"), dict) else {}
        port_name, number = port.get("name"), port.get("number")
        if port_name and number:
            errors.invalid(field, "", "cannot set both port name & port number")
        elif port_name:
            if len(port_name) > 15 or not _PORT_NAME.fullmatch(port_name) or not re.search("[a-z]", port_name):
                errors.invalid(f"{field}.service.port.name", port_name,
                               "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
        elif number:
            if not isinstance(number, int) or not 0 < number < 65536:
                errors.invalid(f"{field}.service.port.number", number, "must be between 1 and 65535, inclusive")
        else:
            errors.required(field, "port name or number is required")
    else:
        errors.invalid(field, "", "resource or service backend is required")


def _validate_path(errors: Errors, field: str, path: dict) -> None:
    path_type, text = path.get("pathType"), path.get("path")
    if path_type is None:
        errors.required(f"{field}.pathType", "pathType must be specified")
    elif path_type not in PATH_TYPES:
        errors.not_supported(f"{field}.pathType", path_type, PATH_TYPES)
    elif path_type in ("Exact", "Prefix") or text:
        if not isinstance(text, str) or not text.startswith("/"):
            errors.invalid(f"{field}.path", text or "", "must be an absolute path")
        elif path_type != "ImplementationSpecific":
            for bad in _UNCLEAN:
                if bad in text:
                    errors.invalid(f"{field}.path", text, f"must not contain '{bad}'")
            for ending in _UNCLEAN_ENDINGS:
                if text.endswith(ending):
                    errors.invalid(f"{field}.path", text, f"cannot end with '{ending}'")
    backend = path.get("backend")
    if isinstance(backend, dict):
        _validate_backend(errors, f"{field}.backend", backend)
    else:
        errors.required(f"{field}.backend")


def validate_ingress(errors: Errors, obj: dict, limits: object) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        return
    rules = [rule for rule in spec.get("rules") or [] if isinstance(rule, dict)]
    default = spec.get("defaultBackend")
    if not rules and default is None:
        errors.invalid("spec", rules, "either `defaultBackend` or `rules` must be specified")
    if isinstance(default, dict):
        _validate_backend(errors, "spec.defaultBackend", default)
    class_name = spec.get("ingressClassName")
    if class_name is not None and (message := _subdomain_error(str(class_name))):
        errors.invalid("spec.ingressClassName", class_name, message)
    for i, rule in enumerate(rules):
        if rule.get("host"):
            _validate_host(errors, f"spec.rules[{i}].host", rule["host"])
        http = rule.get("http")
        if not isinstance(http, dict):
            continue
        paths = [p for p in http.get("paths") or [] if isinstance(p, dict)]
        if not paths:
            errors.required(f"spec.rules[{i}].http.paths")
        for j, path in enumerate(paths):
            _validate_path(errors, f"spec.rules[{i}].http.paths[{j}]", path)
    for i, tls in enumerate(spec.get("tls") or []):
        for j, host in enumerate((tls or {}).get("hosts") or []):
            _validate_host(errors, f"spec.tls[{i}].hosts[{j}]", host)


_DOMAIN_PREFIXED_PATH = re.compile(rf"{_LABEL}(\.{_LABEL})*/\S*")


def validate_ingress_class(errors: Errors, obj: dict, limits: object) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    controller = spec.get("controller")
    if not controller:
        errors.required("spec.controller")
    elif len(controller) > 250:
        errors.causes.append(Cause("spec.controller", "FieldValueTooLong", "Too long: may not be more than 250 bytes"))
    elif not _DOMAIN_PREFIXED_PATH.fullmatch(controller):
        errors.invalid("spec.controller", controller, "must be a domain-prefixed path (such as \"acme.io/foo\")")
    parameters = spec.get("parameters")
    if isinstance(parameters, dict):
        for part in ("kind", "name"):
            if not parameters.get(part):
                errors.required(f"spec.parameters.{part}")


def validate_ingress_class_update(errors: Errors, old: dict, new: dict) -> None:
    before, after = (old.get("spec") or {}).get("controller"), (new.get("spec") or {}).get("controller")
    if before != after:
        errors.invalid("spec.controller", after, "field is immutable")


VALIDATORS: dict[str, Callable[[Errors, dict, object], None]] = {
    "Ingress": validate_ingress,
    "IngressClass": validate_ingress_class,
}
UPDATE_VALIDATORS: dict[str, Callable[[Errors, dict, dict], None]] = {
    "IngressClass": validate_ingress_class_update,
}


def default_class(classes: Iterable[dict]) -> str | None:
    """The IngressClass an Ingress without one gets: of the classes annotated default, the newest."""
    defaults = [c for c in classes
                if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not defaults:
        return None
    newest = max(defaults, key=lambda c: (c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]))
    return newest["metadata"]["name"]
