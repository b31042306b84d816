"""Pod Security admission (apiserver/podsecurity.py, apiserver/podsecurityadmission.py): the checks of the
Pod Security Standards in PodSecurity's words, without a server; then through the real kubectl against a
real API server: a privileged pod refused in a baseline namespace, warnings for the warn level and for
workloads, and the enforce=privileged label kept to cluster administrators."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from podnet.apiserver import podsecurity
from podnet.apiserver.podsecurity import admit_pod, admit_workload, label_errors, policy_of, violations
from support.kubectl import KubectlServer

from podnet import kubeconfig, pki

HOST = "127.0.155.10"


def pod(*containers: dict, name: str = "x", **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": list(containers) or [{"name": "c"}], **spec}}


def container(name: str = "c", **security) -> dict:
    return {"name": name, "securityContext": security} if security else {"name": name}


RESTRICTED_CONTAINER = container(allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]}, runAsNonRoot=True,
                                 seccompProfile={"type": "RuntimeDefault"})


@pytest.mark.parametrize("obj, level, expected", [
    (pod(container(privileged=True)), "baseline",
     [("privileged", 'container "c" must not set securityContext.privileged=true')]),
    (pod(container("a", privileged=True), container("b", privileged=True)), "baseline",
     [("privileged", 'containers "a", "b" must not set securityContext.privileged=true')]),
    (pod(hostNetwork=True, hostPID=True), "baseline", [("host namespaces", "hostNetwork=true, hostPID=true")]),
    (pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "baseline", [("hostPath volumes", 'volume "root"')]),
    (pod({"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}), "baseline",
     [("hostPort", 'container "c" uses hostPort 8080')]),
    (pod(container(capabilities={"add": ["NET_ADMIN", "SYS_ADMIN", "CHOWN"]})), "baseline",
     [("non-default capabilities",
       'container "c" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add')]),
    (pod(container(procMount="Unmasked")), "baseline",
     [("procMount", 'container "c" must not set securityContext.procMount to "Unmasked"')]),
    (pod(securityContext={"seccompProfile": {"type": "Unconfined"}}), "baseline",
     [("seccompProfile", 'pod must not set securityContext.seccompProfile.type to "Unconfined"')]),
    (pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                      {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}), "baseline",
     [("forbidden sysctls", "kernel.msgmax")]),
    (pod(container(seLinuxOptions={"type": "spc_t", "user": "root"})), "baseline",
     [("seLinuxOptions", 'container "c" set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set')]),
    (pod(container(appArmorProfile={"type": "Unconfined"})), "baseline",
     [("forbidden AppArmor profile", 'container "c" must not set securityContext.appArmorProfile.type to "Unconfined"')]),
    (pod(container(capabilities={"add": ["NET_BIND_SERVICE"]}), container("d", runAsUser=0)), "baseline", []),
    (pod(container()), "restricted", [
        ("allowPrivilegeEscalation != false", 'container "c" must set securityContext.allowPrivilegeEscalation=false'),
        ("unrestricted capabilities", 'container "c" must set securityContext.capabilities.drop=["ALL"]'),
        ("runAsNonRoot != true", 'pod or container "c" must set securityContext.runAsNonRoot=true'),
        ("seccompProfile", 'pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'),
    ]),
    (pod(RESTRICTED_CONTAINER), "restricted", []),
    (pod(RESTRICTED_CONTAINER, securityContext={"runAsUser": 0, "runAsNonRoot": False},
         volumes=[{"name": "v", "hostPath": {"path": "/"}}, {"name": "w", "nfs": {}}, {"name": "cm", "configMap": {}}]),
     "restricted", [
         ("restricted volume types", 'volumes "v", "w" use restricted volume types "hostPath", "nfs"'),
         ("runAsNonRoot != true", "pod must not set securityContext.runAsNonRoot=false"),
         ("runAsUser=0", "pod must not set runAsUser=0"),
     ]),
    (pod(container(privileged=True)), "privileged", []),
])
def test_each_check_says_what_pod_security_says(obj, level, expected):
    assert violations(level, obj) == expected


def test_a_pod_refused_by_the_enforce_level_is_told_in_pod_securitys_words():
    decision = admit_pod({}, pod(container(privileged=True)))  # unlabelled: baseline
    assert decision.forbidden == ('violates PodSecurity "baseline:latest": privileged '
                                  '(container "c" must not set securityContext.privileged=true)')
    labels = {"pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "restricted",
              "pod-security.kubernetes.io/warn-version": "v1.31"}
    decision = admit_pod(labels, pod(container(privileged=True)))
    assert decision.forbidden is None
    assert decision.warnings[0].startswith('would violate PodSecurity "restricted:v1.31": privileged (container "c" '
                                           'must not set securityContext.privileged=true), allowPrivilegeEscalation != false')


def test_workloads_are_warned_of_their_template_never_refused():
    deployment = {"spec": {"template": pod(container(privileged=True))}}
    decision = admit_workload({"pod-security.kubernetes.io/warn": "restricted"}, "Deployment", deployment)
    assert decision.forbidden is None
    assert [w.split(":")[0] for w in decision.warnings] == ['would violate PodSecurity "baseline', 'would violate PodSecurity "restricted']
    cronjob = {"spec": {"jobTemplate": {"spec": {"template": pod(hostNetwork=True)}}}}
    assert admit_workload({}, "CronJob", cronjob).warnings == (
        'would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)',)
    assert admit_workload({}, "Service", {"spec": {}}).warnings == ()


def test_labels_are_levels_and_versions_and_a_bad_one_is_the_strictest():
    labels = {"pod-security.kubernetes.io/enforce": "strict", "pod-security.kubernetes.io/warn-version": "1.31"}
    assert [(e.label, e.detail) for e in label_errors(labels)] == [
        ("pod-security.kubernetes.io/enforce", "must be one of privileged, baseline, restricted"),
        ("pod-security.kubernetes.io/warn-version", 'must be "latest" or "v1.x"'),
    ]
    assert policy_of(labels).enforce == podsecurity.LevelVersion("restricted")
    assert policy_of(None).enforce == podsecurity.LevelVersion("baseline")


# --- through kubectl ---------------------------------------------------------------------------------------

PRIVILEGED_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-shell"},
                  "spec": {"containers": [{"name": "c", "image": "debian", "securityContext": {"privileged": True}}]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH; these tests drive the real kubectl")
    started = KubectlServer(tmp_path_factory.mktemp("podsecurity"), host=HOST)
    try:
        for namespace in ("team-a", "default"):
            assert started.kubectl("create", "namespace", namespace).returncode == 0
        yield started
    finally:
        started.stop()


def as_user(server: KubectlServer, name: str, groups: tuple[str, ...], *args: str,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    path = server.directory / f"{name}.kubeconfig"
    if not path.exists():
        cert = pki.make_client(server.ca, name, list(groups), datetime.datetime.now(datetime.UTC))
        path.write_text(kubeconfig.render(server.url, server.ca.cert_pem, name, cert_pem=cert.cert_pem, key_pem=cert.key_pem))
        path.chmod(0o600)
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True,
                          env=server.kubectl_env() | {"KUBECONFIG": str(path)}, timeout=60)


def test_kubectl_a_privileged_pod_in_a_baseline_namespace_is_refused(server: KubectlServer):
    binding = server.kubectl("create", "rolebinding", "eddie-edits", "--clusterrole=edit", "--user=eddie", "-n", "team-a")
    assert binding.returncode == 0, binding.stderr
    refused = as_user(server, "eddie", (), "create", "-n", "team-a", "-f", "-", input=json.dumps(PRIVILEGED_POD))
    assert refused.returncode == 1
    assert refused.stderr == (
        'Error from server (Forbidden): error when creating "STDIN": pods "root-shell" is forbidden: '
        'violates PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)\n')
    plain = as_user(server, "eddie", (), "run", "web", "--image=debian", "-n", "team-a")
    assert (plain.returncode, plain.stdout) == (0, "pod/web created\n"), plain.stderr


def test_kubectl_warn_level_and_workloads_print_warnings(server: KubectlServer):
    labelled = server.kubectl("label", "namespace", "default", "pod-security.kubernetes.io/warn=restricted")
    assert labelled.returncode == 0, labelled.stderr
    created = server.kubectl("run", "loose", "--image=debian", "-n", "default")
    assert created.returncode == 0
    assert created.stderr.startswith('Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
                                     '(container "loose" must set securityContext.allowPrivilegeEscalation=false)')
    deployment = server.kubectl("create", "deployment", "app", "--image=debian", "-n", "team-a")
    assert deployment.returncode == 0 and deployment.stderr == ""  # baseline passes: nothing to warn of
    template = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "host", "namespace": "team-a"},
                "spec": {"selector": {"matchLabels": {"app": "host"}}, "template": {
                    "metadata": {"labels": {"app": "host"}},
                    "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "debian"}]}}}}
    warned = server.kubectl("apply", "-f", "-", input=json.dumps(template))
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr == 'Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)\n'


def test_only_a_cluster_admin_makes_a_namespace_privileged(server: KubectlServer):
    grant = server.kubectl("create", "clusterrolebinding", "nina-namespaces", "--clusterrole=ns-writer", "--user=nina")
    role = server.kubectl("create", "clusterrole", "ns-writer", "--verb=*", "--resource=namespaces")
    assert grant.returncode == 0 and role.returncode == 0, grant.stderr + role.stderr
    refused = as_user(server, "nina", (), "label", "namespace", "team-a", "pod-security.kubernetes.io/enforce=privileged")
    assert refused.returncode == 1
    assert refused.stderr == (
        'Error from server (Forbidden): namespaces "team-a" is forbidden: User "nina" cannot set label '
        "pod-security.kubernetes.io/enforce=privileged: it takes cluster-admin rights\n")
    assert as_user(server, "nina", (), "label", "namespace", "team-a", "pod-security.kubernetes.io/enforce=restricted").returncode == 0
    invalid = server.kubectl("label", "--overwrite", "namespace", "team-a", "pod-security.kubernetes.io/enforce=strict")
    assert invalid.returncode == 1
    assert invalid.stderr == (
        'The Namespace "team-a" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: '
        'Invalid value: "strict": must be one of privileged, baseline, restricted\n')
    admin = server.kubectl("label", "--overwrite", "namespace", "team-a", "pod-security.kubernetes.io/enforce=privileged")
    assert admin.returncode == 0, admin.stderr
    allowed = server.kubectl("create", "-n", "team-a", "-f", "-", input=json.dumps(PRIVILEGED_POD))
    assert (allowed.returncode, allowed.stdout) == (0, "pod/root-shell created\n"), allowed.stderr


def test_a_new_enforce_level_warns_of_the_pods_it_would_refuse():
    pods = [pod(container(privileged=True), name="a"), pod(name="b"), pod(name="c"), pod(hostNetwork=True, name="d")]
    assert podsecurity.existing_pod_warnings("team-a", {}, {"pod-security.kubernetes.io/enforce": "baseline"}, pods) == []
    assert podsecurity.existing_pod_warnings("team-a", {}, {"pod-security.kubernetes.io/enforce": "privileged"}, pods) == []
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    assert podsecurity.existing_pod_warnings("team-a", {}, labels, pods[1:3]) == [
        'existing pods in namespace "team-a" violate the new PodSecurity enforce level "restricted:latest"',
        "b (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, "
        "seccompProfile"]
    assert podsecurity.existing_pod_warnings("team-a", labels, {"pod-security.kubernetes.io/enforce": "baseline"}, pods) == [
        'existing pods in namespace "team-a" violate the new PodSecurity enforce level "baseline:latest"',
        "a: privileged", "d: host namespaces"]


def test_kubectl_label_dry_run_lists_the_pods_a_stricter_level_would_refuse(server: KubectlServer):
    created = server.kubectl("run", "plain", "--image=debian", "-n", "team-a")
    assert created.returncode == 0, created.stderr
    dry = server.kubectl("label", "--dry-run=server", "--overwrite", "namespace", "team-a",
                         "pod-security.kubernetes.io/enforce=baseline")
    assert (dry.returncode, dry.stdout) == (0, "namespace/team-a labeled (server dry run)\n"), dry.stderr
    assert dry.stderr == ('Warning: existing pods in namespace "team-a" violate the new PodSecurity enforce level '
                          '"baseline:latest"\nWarning: root-shell: privileged\n')
    labels = server.kubectl("get", "namespace", "team-a", "-o", "jsonpath={.metadata.labels}")
    assert json.loads(labels.stdout)["pod-security.kubernetes.io/enforce"] == "privileged"  # a dry run changes nothing


def test_the_audit_level_and_the_enforce_policy_annotate_the_audit_events(tmp_path):
    (tmp_path / "policy.yaml").write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
                                          "rules:\n  - level: Metadata\n")
    audited = KubectlServer(tmp_path, host="127.0.155.11", extra_args=(
        "--audit-policy-file", str(tmp_path / "policy.yaml"), "--audit-log-path", str(tmp_path / "audit.log")))
    try:
        assert audited.kubectl("create", "namespace", "audited").returncode == 0
        assert audited.kubectl("label", "namespace", "audited", "pod-security.kubernetes.io/audit=restricted").returncode == 0
        created = audited.kubectl("run", "web", "--image=debian", "-n", "audited", "-v=8")
        assert created.returncode == 0, created.stderr
        audit_ids = [line.split("Audit-Id:", 1)[1].strip() for line in created.stderr.splitlines() if "Audit-Id:" in line]
        events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
        (annotations,) = [e["annotations"] for e in events if e["auditID"] in audit_ids and e["verb"] == "create"]
        assert annotations["pod-security.kubernetes.io/enforce-policy"] == "baseline:latest"
        assert annotations["pod-security.kubernetes.io/audit-violations"].startswith(
            'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "web" must set')
        assert annotations["authorization.k8s.io/decision"] == "allow"
    finally:
        audited.stop()
