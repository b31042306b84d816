"""Pod Security admission: the Pod Security Standards, checked per namespace as kube-apiserver's
PodSecurity plugin does (k8s.io/pod-security-admission).

A namespace chooses a level per mode with its labels `pod-security.kubernetes.io/<mode>` (`enforce`,
`warn`, `audit`) and `pod-security.kubernetes.io/<mode>-version`: `privileged` (anything), `baseline`
(no known privilege escalation) or `restricted` (hardened). A pod that breaks the enforce level is refused
with the checks' own words (`pods "x" is forbidden: violates PodSecurity "baseline:latest": privileged
(container "c" must not set securityContext.privileged=true)`); the warn level adds `Warning` headers
(`would violate PodSecurity "restricted:latest": ...`). Workloads (Deployments, Jobs, ...) are never
refused, but their pod template gets warnings for the enforce and warn levels alike, so the mistake shows
when the manifest is applied rather than when the controller's pods fail.

Where podnet differs from kube-apiserver, on purpose:
- an unlabelled namespace is `baseline` for every mode (kube-apiserver's built-in default is
  `privileged`; a cluster administrator sets `baseline` through the AdmissionConfiguration). Pods
  share the node's kernel and, in netns mode, its filesystem: baseline is what keeps them off the host.
- writing a namespace whose enforce label is `privileged` takes cluster-admin-equivalent rights (every
  verb on every resource). kube-apiserver has no such check: whoever may update the namespace may set
  any label, and restricting that takes RBAC on namespaces or a ValidatingAdmissionPolicy.
- the `-version` labels are validated but every version is judged by the latest checks (1.31's).
- `audit` violations annotate the request's audit events (`pod-security.kubernetes.io/audit-violations`),
  as does the enforce policy a pod was judged by (`pod-security.kubernetes.io/enforce-policy`).
No namespace is exempt: what podnet itself runs in kube-system (the cluster DNS's pod) passes baseline.

Pure: namespace labels and objects in, decisions and messages out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")
LEVELS = ("privileged", "baseline", "restricted")
DEFAULT_LEVEL = "baseline"
_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]*)$")

# Kinds whose objects carry a pod template (spec.template), and where; CronJob's is one level deeper.
_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

_BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
_ALLOWED_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_RESTRICTED_VOLUME_SOURCES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc",
    "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
    "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
_SECCOMP_ANNOTATION_POD = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_ANNOTATION_CONTAINER = "container.seccomp.security.alpha.kubernetes.io/"
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True, slots=True)
class LevelVersion:
    level: str
    version: str = "latest"

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


@dataclass(frozen=True, slots=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion


@dataclass(frozen=True, slots=True)
class LabelError:
    """A PodSecurity label a namespace may not carry: its field, value and why."""

    label: str
    value: str
    detail: str


def label_errors(labels: dict | None) -> list[LabelError]:
    """The namespace's PodSecurity labels that are not a level or a version."""
    errors = []
    for mode in MODES:
        for suffix, valid, detail in (
            ("", lambda v: v in LEVELS, "must be one of privileged, baseline, restricted"),
            ("-version", lambda v: v == "latest" or bool(_VERSION.match(v)), 'must be "latest" or "v1.x"'),
        ):
            label = f"{LABEL_PREFIX}{mode}{suffix}"
            value = (labels or {}).get(label)
            if value is not None and not valid(str(value)):
                errors.append(LabelError(label, str(value), detail))
    return errors


def policy_of(labels: dict | None) -> Policy:
    """The namespace's level per mode; an invalid label counts as the strictest, as PodSecurity does."""
    labels = labels or {}

    def level_version(mode: str) -> LevelVersion:
        level = labels.get(LABEL_PREFIX + mode, DEFAULT_LEVEL)
        version = labels.get(f"{LABEL_PREFIX}{mode}-version", "latest")
        if level not in LEVELS:
            return LevelVersion("restricted")
        if version != "latest" and not _VERSION.match(str(version)):
            version = "latest"
        return LevelVersion(level, str(version))

    return Policy(level_version("enforce"), level_version("audit"), level_version("warn"))


def sets_privileged_enforce(labels: dict | None) -> bool:
    return (labels or {}).get(LABEL_PREFIX + "enforce") == "privileged"


def pod_template(kind: str, obj: dict) -> dict | None:
    """The pod (metadata and spec) a workload object would create; None for kinds without one."""
    path = _TEMPLATE_PATHS.get(kind)
    if path is None:
        return None
    node: object = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


# --- checks ---------------------------------------------------------------------------------------------
# Each takes the pod's metadata and spec and returns (reason, detail) when it forbids, else None.


def _containers(spec: dict) -> list[dict]:
    """Init, regular and ephemeral containers, in that order (the order PodSecurity visits them)."""
    return [c for field in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(field) or [] if isinstance(c, dict)]


def _context(container: dict) -> dict:
    context = container.get("securityContext")
    return context if isinstance(context, dict) else {}


def _pod_context(spec: dict) -> dict:
    context = spec.get("securityContext")
    return context if isinstance(context, dict) else {}


def _quote(items: list[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _containers_phrase(names: list[str]) -> str:
    return f'{_plural("container", "containers", len(names))} {_quote(names)}'


def _capabilities(container: dict) -> dict | None:
    capabilities = _context(container).get("capabilities")
    return capabilities if isinstance(capabilities, dict) else None


def check_privileged(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad = [c.get("name", "") for c in _containers(spec) if _context(c).get("privileged") is True]
    if bad:
        return "privileged", f"{_containers_phrase(bad)} must not set securityContext.privileged=true"
    return None


def check_app_armor(meta: dict, spec: dict) -> tuple[str, str] | None:
    forbidden = []
    for key, value in sorted((meta.get("annotations") or {}).items()):
        if key.startswith(_APPARMOR_ANNOTATION) and value and value != "runtime/default" and not str(value).startswith("localhost/"):
            forbidden.append(f'{key}="{value}"')
    setters = []
    if (_pod_context(spec).get("appArmorProfile") or {}).get("type") == "Unconfined":
        setters.append("pod")
    bad = [c.get("name", "") for c in _containers(spec) if (_context(c).get("appArmorProfile") or {}).get("type") == "Unconfined"]
    if bad:
        setters.append(_containers_phrase(bad))
    if setters:
        forbidden.append(f'{" and ".join(setters)} must not set securityContext.appArmorProfile.type to "Unconfined"')
    if forbidden:
        return _plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(forbidden)), ", ".join(forbidden)
    return None


def check_capabilities_baseline(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad, added = [], set()
    for container in _containers(spec):
        extra = {str(c) for c in (_capabilities(container) or {}).get("add") or [] if c not in _BASELINE_CAPABILITIES}
        if extra:
            bad.append(container.get("name", ""))
            added |= extra
    if bad:
        return ("non-default capabilities",
                f"{_containers_phrase(bad)} must not include {_quote(sorted(added))} in securityContext.capabilities.add")
    return None


def check_capabilities_restricted(meta: dict, spec: dict) -> tuple[str, str] | None:
    missing_drop, adding, added = [], [], set()
    for container in _containers(spec):
        capabilities = _capabilities(container)
        if capabilities is None or "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(container.get("name", ""))
        extra = {str(c) for c in (capabilities or {}).get("add") or [] if c != "NET_BIND_SERVICE"}
        if extra:
            adding.append(container.get("name", ""))
            added |= extra
    details = []
    if missing_drop:
        details.append(f'{_containers_phrase(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_containers_phrase(adding)} must not include {_quote(sorted(added))} in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def check_host_namespaces(meta: dict, spec: dict) -> tuple[str, str] | None:
    used = sorted(field for field in ("hostIPC", "hostNetwork", "hostPID") if spec.get(field) is True)
    return ("host namespaces", ", ".join(f"{field}=true" for field in used)) if used else None


def _volumes(spec: dict) -> list[dict]:
    return [v for v in spec.get("volumes") or [] if isinstance(v, dict)]


def check_host_path_volumes(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad = [v.get("name", "") for v in _volumes(spec) if v.get("hostPath") is not None]
    if bad:
        return "hostPath volumes", f'{_plural("volume", "volumes", len(bad))} {_quote(bad)}'
    return None


def check_host_ports(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad, ports = [], set()
    for container in _containers(spec):
        used = {int(p["hostPort"]) for p in container.get("ports") or [] if isinstance(p, dict) and p.get("hostPort")}
        if used:
            bad.append(container.get("name", ""))
            ports |= used
    if bad:
        listed = ", ".join(str(p) for p in sorted(ports, key=str))
        return ("hostPort", f'{_containers_phrase(bad)} {_plural("uses", "use", len(bad))} '
                            f'{_plural("hostPort", "hostPorts", len(ports))} {listed}')
    return None


def check_proc_mount(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad, values = [], set()
    for container in _containers(spec):
        mount = _context(container).get("procMount")
        if mount not in (None, "", "Default"):
            bad.append(container.get("name", ""))
            values.add(str(mount))
    if bad:
        return "procMount", f"{_containers_phrase(bad)} must not set securityContext.procMount to {_quote(sorted(values))}"
    return None


def check_restricted_volumes(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad, types = [], set()
    for volume in _volumes(spec):
        source = next((s for s in _VOLUME_SOURCES if volume.get(s) is not None), "unknown")
        if source not in _RESTRICTED_VOLUME_SOURCES:
            bad.append(volume.get("name", ""))
            types.add(source)
    if bad:
        return ("restricted volume types",
                f'{_plural("volume", "volumes", len(bad))} {_quote(bad)} {_plural("uses", "use", len(bad))} '
                f'{_plural("restricted volume type", "restricted volume types", len(types))} {_quote(sorted(types))}')
    return None


def _setters(spec: dict, bad_value) -> tuple[list[str], list[str]]:
    """("pod" if the pod's securityContext has a bad value, containers that do) by `bad_value(context)`."""
    pod = ["pod"] if bad_value(_pod_context(spec)) else []
    return pod, [c.get("name", "") for c in _containers(spec) if bad_value(_context(c))]


def _explicit_or_implicit(spec: dict, field: str, good, reason: str, must_not: str, must: str) -> tuple[str, str] | None:
    """The shape of runAsNonRoot and seccompProfile: set badly by the pod or a container, or left unset
    by a container whose pod does not set it well."""
    pod_value = _pod_context(spec).get(field)
    setters = ["pod"] if pod_value is not None and not good(pod_value) else []
    pod_good = pod_value is not None and good(pod_value)
    explicit, implicit = [], []
    for container in _containers(spec):
        value = _context(container).get(field)
        if value is not None:
            if not good(value):
                explicit.append(container.get("name", ""))
        elif not pod_good:
            implicit.append(container.get("name", ""))
    if explicit:
        setters.append(_containers_phrase(explicit))
    if setters:
        return reason, must_not.format(" and ".join(setters))
    if implicit:
        return reason, must.format(_containers_phrase(implicit))
    return None


def check_run_as_non_root(meta: dict, spec: dict) -> tuple[str, str] | None:
    return _explicit_or_implicit(spec, "runAsNonRoot", lambda v: v is True, "runAsNonRoot != true",
                                 "{} must not set securityContext.runAsNonRoot=false",
                                 "pod or {} must set securityContext.runAsNonRoot=true")


def check_run_as_user(meta: dict, spec: dict) -> tuple[str, str] | None:
    pod, containers = _setters(spec, lambda context: context.get("runAsUser") == 0)
    setters = pod + ([_containers_phrase(containers)] if containers else [])
    return ("runAsUser=0", f'{" and ".join(setters)} must not set runAsUser=0') if setters else None


def check_selinux_options(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def bad(context: dict) -> bool:
        options = context.get("seLinuxOptions")
        if not isinstance(options, dict):
            return False
        invalid = False
        if (options.get("type") or "") not in _SELINUX_TYPES:
            bad_types.add(str(options.get("type")))
            invalid = True
        for field in flags:
            if options.get(field):
                flags[field] = invalid = True
        return invalid

    pod, containers = _setters(spec, bad)
    setters = pod + ([_containers_phrase(containers)] if containers else [])
    if not setters:
        return None
    data = []
    if bad_types:
        data.append(f'{_plural("type", "types", len(bad_types))} {_quote(sorted(bad_types))}')
    data += [f"{field} may not be set" for field, was_set in flags.items() if was_set]
    return "seLinuxOptions", f'{" and ".join(setters)} set forbidden securityContext.seLinuxOptions: {"; ".join(data)}'


def _seccomp_type(profile: object) -> str | None:
    return str(profile.get("type")) if isinstance(profile, dict) else None


def check_seccomp_baseline(meta: dict, spec: dict) -> tuple[str, str] | None:
    annotations = meta.get("annotations") or {}
    forbidden = sorted(
        f'{key}="{value}"' for key, value in annotations.items()
        if (key == _SECCOMP_ANNOTATION_POD or key.startswith(_SECCOMP_ANNOTATION_CONTAINER))
        and value not in ("runtime/default", "docker/default") and not str(value).startswith("localhost/")
    )
    if forbidden:
        return "seccompProfile", f'forbidden {_plural("annotation", "annotations", len(forbidden))} {", ".join(forbidden)}'
    values: set[str] = set()

    def unconfined(context: dict) -> bool:
        kind = _seccomp_type(context.get("seccompProfile"))
        if kind is not None and kind not in ("RuntimeDefault", "Localhost"):
            values.add(kind)
            return True
        return False

    pod, containers = _setters(spec, unconfined)
    setters = pod + ([_containers_phrase(containers)] if containers else [])
    if setters:
        return "seccompProfile", f'{" and ".join(setters)} must not set securityContext.seccompProfile.type to {_quote(sorted(values))}'
    return None


def check_seccomp_restricted(meta: dict, spec: dict) -> tuple[str, str] | None:
    values: set[str] = set()

    def good(profile: object) -> bool:
        kind = _seccomp_type(profile)
        if kind in ("RuntimeDefault", "Localhost"):
            return True
        values.add(str(kind))
        return False

    found = _explicit_or_implicit(
        spec, "seccompProfile", good, "seccompProfile", "{} must not set securityContext.seccompProfile.type to VALUES",
        'pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    if found is not None:
        return found[0], found[1].replace("VALUES", _quote(sorted(values)))
    return None


def check_sysctls(meta: dict, spec: dict) -> tuple[str, str] | None:
    forbidden = [str(s.get("name")) for s in _pod_context(spec).get("sysctls") or []
                 if isinstance(s, dict) and s.get("name") not in _ALLOWED_SYSCTLS]
    return ("forbidden sysctls", ", ".join(forbidden)) if forbidden else None


def check_allow_privilege_escalation(meta: dict, spec: dict) -> tuple[str, str] | None:
    bad = [c.get("name", "") for c in _containers(spec) if _context(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return "allowPrivilegeEscalation != false", f"{_containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false"
    return None


def check_windows_host_process(meta: dict, spec: dict) -> tuple[str, str] | None:
    pod, containers = _setters(spec, lambda context: (context.get("windowsOptions") or {}).get("hostProcess") is True)
    setters = pod + ([_containers_phrase(containers)] if containers else [])
    if setters:
        return "hostProcess", f'{" and ".join(setters)} must not set securityContext.windowsOptions.hostProcess=true'
    return None


# The checks in the order PodSecurity runs them (its check files' order): for baseline the baseline checks,
# then those that restricted replaces (`_OVERLAPPING`); for restricted, the baseline checks and then the
# restricted ones.
_BASELINE = (
    check_app_armor, check_host_namespaces, check_host_ports, check_privileged, check_proc_mount,
    check_selinux_options, check_sysctls, check_windows_host_process,
)
_OVERLAPPING = (check_capabilities_baseline, check_host_path_volumes, check_seccomp_baseline)
_RESTRICTED = (
    check_allow_privilege_escalation, check_capabilities_restricted, check_restricted_volumes, check_run_as_non_root,
    check_run_as_user, check_seccomp_restricted,
)


def violations(level: str, pod: dict) -> list[tuple[str, str]]:
    """(reason, detail) of every check of `level` that the pod (metadata + spec) fails, in PodSecurity's order."""
    if level == "privileged":
        return []
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    checks = _BASELINE + (_OVERLAPPING if level == "baseline" else _RESTRICTED)
    return [found for check in checks if (found := check(meta, spec)) is not None]


def describe(found: list[tuple[str, str]]) -> str:
    """`privileged (container "c" must not ...), host namespaces (hostNetwork=true)`."""
    return ", ".join(f"{reason} ({detail})" if detail else reason for reason, detail in found)


AUDIT_VIOLATIONS = LABEL_PREFIX + "audit-violations"
ENFORCE_POLICY = LABEL_PREFIX + "enforce-policy"


@dataclass(frozen=True, slots=True)
class Decision:
    """What admission does with one pod or workload: refuse with `forbidden` (None: admit), warn, and
    annotate the request's audit events (the enforce policy applied, the audit level's violations)."""

    forbidden: str | None
    warnings: tuple[str, ...]
    audit: tuple[tuple[str, str], ...] = ()


def _audit(policy: Policy, template: dict, *, enforced: bool) -> tuple[tuple[str, str], ...]:
    annotations = [(ENFORCE_POLICY, str(policy.enforce))] if enforced else []
    found = violations(policy.audit.level, template)
    if found:
        annotations.append((AUDIT_VIOLATIONS, f'would violate PodSecurity "{policy.audit}": {describe(found)}'))
    return tuple(annotations)


def admit_pod(labels: dict | None, pod: dict) -> Decision:
    """A new pod in a namespace with `labels`: refused when it breaks the enforce level; warned of the warn
    level unless that is the level that refused it."""
    policy = policy_of(labels)
    refused = violations(policy.enforce.level, pod)
    forbidden = f'violates PodSecurity "{policy.enforce}": {describe(refused)}' if refused else None
    warnings = ()
    if policy.warn != policy.enforce or not refused:
        warned = violations(policy.warn.level, pod)
        if warned:
            warnings = (f'would violate PodSecurity "{policy.warn}": {describe(warned)}',)
    return Decision(forbidden, warnings, _audit(policy, pod, enforced=True))


def existing_pod_warnings(namespace: str, old_labels: dict | None, new_labels: dict | None, pods: list[dict]) -> list[str]:
    """What a namespace update that changes its enforce level warns of: the pods already there that the new
    level would refuse, those with the same reasons in one line (`web-1 (and 2 other pods): privileged`)."""
    old, new = policy_of(old_labels).enforce, policy_of(new_labels).enforce
    if new == old or new.level == "privileged":
        return []
    grouped: dict[str, list[str]] = {}
    for pod in pods:
        found = violations(new.level, pod)
        if found:
            reasons = ", ".join(reason for reason, _ in found)
            grouped.setdefault(reasons, []).append(str((pod.get("metadata") or {}).get("name")))
    if not grouped:
        return []
    warnings = [f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "{new}"']
    for reasons, names in grouped.items():
        others = len(names) - 1
        who = f'{names[0]} (and {others} other {_plural("pod", "pods", others)})' if others else names[0]
        warnings.append(f"{who}: {reasons}")
    return warnings


def admit_workload(labels: dict | None, kind: str, obj: dict) -> Decision:
    """A workload is never refused; its pod template is warned of the enforce and the warn level."""
    template = pod_template(kind, obj)
    if template is None:
        return Decision(None, ())
    policy = policy_of(labels)
    warnings = []
    for level_version in dict.fromkeys((policy.enforce, policy.warn)):
        found = violations(level_version.level, template)
        if found:
            warnings.append(f'would violate PodSecurity "{level_version}": {describe(found)}')
    return Decision(None, tuple(warnings), _audit(policy, template, enforced=False))
