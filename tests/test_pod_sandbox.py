"""Netns pods that cannot become the host (nodeagent/pods/sandbox.py, launch.py) and their volumes
(nodeagent/volumes.py).

The plan is checked without processes; then a real API server and a real node agent in netns mode, whose
home is outside /tmp (so that only the sandbox's hiding keeps pods from it), run pods created by an edit
user of team-a: the pod's programs are not root, cannot read the cluster's home or the agent's state,
cannot signal the agent, cannot mount; a privileged pod is refused by Pod Security; ConfigMap, Secret,
downwardAPI, projected and emptyDir volumes show their files at their mountPath, and a ConfigMap's change
reaches its file; runAsNonRoot with uid 0 waits in CreateContainerConfigError with the kubelet's message.
"""

from __future__ import annotations

import datetime
import json
import secrets
import shutil
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from podnet.nodeagent.pods import sandbox
from podnet.nodeagent.volumes import DATA_LINK, File, VolumeError, refresh_after, render, write_atomically
from support.apiserver import ApiServerProcess
from support.netns_pods import netns_pod, pod_exec, require_root, wait_for
from support.nodeagent import AgentProcess, Cluster, free_udp_port, wait_running

from podnet import pki
from podnet.client import ApiClient, ApiError

pytestmark = pytest.mark.host_network

ADDRESS = "127.0.156.11"
NAMESPACE = "team-a"


# --- the plan, without processes --------------------------------------------------------------------------


def pod_with(container: dict | None = None, **spec) -> dict:
    return {"metadata": {"name": "p", "namespace": NAMESPACE, "uid": "u-1"},
            "spec": {"containers": [container or {"name": "c"}], **spec}}


def test_an_unset_user_is_nobody_with_no_new_privileges_and_the_default_filter():
    security = sandbox.security(pod_with(), {"name": "c"})
    assert (security.uid, security.gid, security.groups) == (65534, 65534, ())
    assert set(security.capabilities) == sandbox.DEFAULT_CAPABILITIES
    assert (security.no_new_privs, security.seccomp, security.error) == (True, True, None)


def test_the_security_context_decides_user_groups_and_capabilities():
    container = {"name": "c", "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
                                                  "allowPrivilegeEscalation": True}}
    security = sandbox.security(pod_with(container, securityContext={"runAsGroup": 3000, "fsGroup": 2000,
                                                                      "supplementalGroups": [4000]}), container)
    assert (security.uid, security.gid, security.groups, security.capabilities) == (1000, 3000, (2000, 4000), ("NET_ADMIN",))
    assert security.no_new_privs is False
    privileged = sandbox.security(pod_with(), {"name": "c", "securityContext": {"privileged": True}})
    assert (privileged.capabilities, privileged.seccomp, privileged.no_new_privs) == (sandbox.CAPABILITIES, False, False)
    unconfined = sandbox.security(pod_with(securityContext={"seccompProfile": {"type": "Unconfined"}}), {"name": "c"})
    assert unconfined.seccomp is False


def test_the_launch_plan_of_a_privileged_container_keeps_the_host_views():
    bind = sandbox.Bind("/node/volumes/config", "/etc/config", True, True)
    plain = sandbox.plan(("sleep", "1"), {"PATH": "/bin"}, sandbox.security(pod_with(), {"name": "c"}),
                         netns="/run/netns/x", hostname="p", hidden=("/root/.podnet",), binds=(bind,), scratch="/s")
    assert (plain.read_only_root, plain.masked, plain.binds, plain.hidden) == (True, sandbox.MASKED_PATHS, (bind,), ("/root/.podnet",))
    assert plain.capabilities == tuple(sorted(sandbox.CAPABILITIES.index(c) for c in sandbox.DEFAULT_CAPABILITIES))
    assert dict(plain.sysctls)["net.ipv4.ping_group_range"] == "0 2147483647" and plain.seccomp
    privileged = sandbox.plan(("sleep", "1"), {}, sandbox.security(pod_with(), {"name": "c", "securityContext": {"privileged": True}}),
                              netns="/run/netns/x", hostname="p")
    assert (privileged.read_only_root, privileged.masked, privileged.read_only, privileged.seccomp) == (False, (), (), "")
    assert json.loads(privileged.to_json())["argv"] == ["sleep", "1"]


def test_run_as_non_root_with_uid_0_is_refused_in_the_kubelets_words():
    container = {"name": "c", "securityContext": {"runAsUser": 0}}
    security = sandbox.security(pod_with(container, securityContext={"runAsNonRoot": True}), container)
    assert security.error == 'container\'s runAsUser breaks non-root policy (pod: "p_team-a(u-1)", container: c)'


def test_the_seccomp_program_refuses_mount_and_namespaces_and_allows_the_rest():
    program = sandbox.seccomp_filter()
    if program is None:
        pytest.skip("the default filter is for x86-64")
    instructions = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]

    def run(nr: int, arch: int = 0xC000003E, arg0: int = 0) -> int:
        """A classic-BPF interpreter for the few instructions the filter uses."""
        data = {0: nr, 4: arch, 16: arg0}
        pc, accumulator = 0, 0
        while True:
            code, jt, jf, k = instructions[pc]
            if code == 0x20:
                accumulator = data[k]
            elif code == 0x06:
                return k
            else:
                taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
                pc += jt if taken else jf
            pc += 1

    eperm, allow, enosys = 0x00050001, 0x7FFF0000, 0x00050026
    assert [run(nr) for nr in (165, 272, 308, 101, 321)] == [eperm] * 5  # mount, unshare, setns, ptrace, bpf
    assert [run(nr) for nr in (0, 1, 59, 105)] == [allow] * 4  # read, write, execve, setuid
    assert run(435) == enosys  # clone3: libc falls back to clone
    assert run(56, arg0=0x01200011) == allow  # fork's clone flags
    assert run(56, arg0=0x10000000) == eperm  # CLONE_NEWUSER
    assert run(0, arch=0x40000003) == eperm  # i386


def test_volumes_render_as_the_kubelet_writes_them():
    configmaps = {"team-a/app": {"data": {"mode": "fast", "level": "3"}, "binaryData": {"blob": "AAE="}}}
    secrets_ = {"team-a/db": {"data": {"password": "czNjcmV0"}}}
    pod = pod_with()
    pod["metadata"]["labels"] = {"app": "web", "tier": "front"}
    assert render(pod, {"name": "v", "configMap": {"name": "app", "items": [{"key": "mode", "path": "conf/mode", "mode": 0o400}]}},
                  configmaps, secrets_, {}) == {"conf/mode": File(b"fast", 0o400)}
    assert render(pod, {"name": "v", "secret": {"secretName": "db", "defaultMode": 0o440}}, configmaps, secrets_, {}) == {
        "password": File(b"s3cret", 0o440)}
    assert render(pod, {"name": "v", "configMap": {"name": "app"}}, configmaps, secrets_, {})["blob"] == File(b"\x00\x01", 0o644)
    assert render(pod, {"name": "v", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                               {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                  configmaps, secrets_, {}) == {"labels": File(b'app="web"\ntier="front"', 0o644), "ns": File(b"team-a", 0o644)}
    projected = {"name": "kube-api-access-x", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "app", "items": [{"key": "level", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
    assert render(pod, projected, configmaps, secrets_, {"kube-api-access-x/token": "jwt"}) == {
        "token": File(b"jwt", 0o644), "ca.crt": File(b"3", 0o644), "namespace": File(b"team-a", 0o644)}
    assert render(pod, {"name": "v", "secret": {"secretName": "gone", "optional": True}}, configmaps, secrets_, {}) == {}
    with pytest.raises(VolumeError, match='MountVolume.SetUp failed for volume "v" : configmap "gone" not found'):
        render(pod, {"name": "v", "configMap": {"name": "gone"}}, configmaps, secrets_, {})
    with pytest.raises(VolumeError, match="configmap references non-existent config key: nope"):
        render(pod, {"name": "v", "configMap": {"name": "app", "items": [{"key": "nope", "path": "x"}]}}, configmaps, secrets_, {})


def test_tokens_are_asked_for_again_at_four_fifths_of_their_life():
    projected = {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "a", "expirationSeconds": 3607}},
                                                        {"serviceAccountToken": {"path": "b", "expirationSeconds": 1000}}]}}
    assert refresh_after(projected) == 800.0
    assert refresh_after({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "a"}}]}}) == 2880.0
    assert refresh_after({"name": "c", "configMap": {"name": "app"}}) is None


def test_an_update_swaps_the_data_directory_in_one_rename(tmp_path: Path):
    first = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    write_atomically(tmp_path, {"mode": File(b"fast", 0o644), "old": File(b"x", 0o644)}, None, first)
    data = (tmp_path / DATA_LINK).readlink()
    assert (tmp_path / "mode").read_text() == "fast" and (tmp_path / "mode").readlink() == Path(DATA_LINK) / "mode"
    write_atomically(tmp_path, {"mode": File(b"slow", 0o600)}, 2000, first + datetime.timedelta(seconds=1))
    assert (tmp_path / "mode").read_text() == "slow"
    assert (tmp_path / DATA_LINK).readlink() != data and not (tmp_path / data).exists()  # the old one is gone
    assert not (tmp_path / "old").exists()
    mode = (tmp_path / "mode").stat()
    assert (mode.st_gid, oct(mode.st_mode & 0o777)) == (2000, oct(0o640))  # fsGroup may read it


# --- a real cluster ---------------------------------------------------------------------------------------


def editor(cluster: Cluster):
    """An API client of eddie, who may edit team-a (the test token file's `edit:team-a` group)."""
    return cluster.api.client(cluster.api.tokens["editor"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_root()
    # Outside /tmp, which pods never see anyway: here only the hiding of podnet's home keeps pods from it.
    home = Path("/var/lib") / f"podnet-sandbox-test-{secrets.token_hex(3)}"
    home.mkdir(mode=0o755)
    (home / "canary.txt").write_text("the cluster's own file\n")
    (home / "canary.txt").chmod(0o644)
    (home / "apiserver").mkdir()
    signing_key = home / "apiserver" / "sa.key"
    signing_key.write_bytes(pki.make_signing_key())
    api = ApiServerProcess(home / "apiserver", f"sqlite:///{home / 'apiserver' / 'store.db'}", controllers=True,
                           extra_args=("--service-account-signing-key-file", str(signing_key)))
    node = f"sb{secrets.token_hex(2)}-1"
    agent = AgentProcess(node, ADDRESS, home, api.kubeconfig, free_udp_port(ADDRESS), extra_args=("--pod-mode", "netns"))
    started = Cluster(api, home, {node: agent})
    try:
        api.start()
        agent.start()
        started.api_call(lambda client: client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        yield started
    finally:
        agent.kill(signal.SIGTERM)  # a graceful stop removes the agent's namespaces
        api.kill()
        shutil.rmtree(home, ignore_errors=True)


def tenant_pod(cluster: Cluster, name: str, command: str, **spec) -> dict:
    pod = netns_pod(name, next(iter(cluster.agents)), command=["sh", "-c", command])
    pod["metadata"]["namespace"] = NAMESPACE
    pod["spec"].update(spec)
    return pod


def create_as_editor(cluster: Cluster, *objects: dict) -> None:
    async def create(_admin) -> None:
        async with editor(cluster) as client:
            for obj in objects:
                await client.create(obj)
    cluster.api_call(create)


def report(cluster: Cluster, pod: str, path: str = "/tmp/report") -> dict[str, str]:
    """`key=value` lines the pod's program wrote, read from its own /tmp through exec."""
    def read() -> str | None:
        done = pod_exec(cluster, f"{NAMESPACE}/{pod}", "cat", path)
        return done.stdout if done.returncode == 0 else None
    text = wait_for(read, 20, f"the report of pod {pod}", interval=0.3)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_tenants_pod_cannot_become_the_host(cluster: Cluster):
    agent = next(iter(cluster.agents.values()))
    state = agent.state_dir
    checks = "; ".join([
        'echo "uid=$(id -u)"',
        f'cat {cluster.home}/canary.txt >/dev/null 2>&1 && echo home=readable || echo home=hidden',
        f'echo "home_entries=$(ls -A {cluster.home} 2>/dev/null | wc -l)"',
        f'ls {state}/netns >/dev/null 2>&1 && echo state=visible || echo state=hidden',
        f'kill -0 {agent.process.pid} 2>/dev/null && echo signal=delivered || echo signal=refused',
        "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo mount=done || echo mount=refused",
        "unshare -r -m true 2>/dev/null && echo userns=made || echo userns=refused",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d ' \\t' | tr : =",
    ])
    create_as_editor(cluster, tenant_pod(cluster, "tenant", f"{{ {checks}; }} > /tmp/r.tmp; mv /tmp/r.tmp /tmp/report; sleep 600"))
    cluster.api_call(lambda client: wait_running(client, NAMESPACE, "tenant", timeout=30))
    found = report(cluster, "tenant")
    assert found == {"uid": "65534", "home": "hidden", "home_entries": "0", "state": "hidden", "signal": "refused",
                     "mount": "refused", "userns": "refused", "CapEff": "0000000000000000", "NoNewPrivs": "1",
                     "Seccomp": "2"}
    assert (cluster.home / "canary.txt").read_text() == "the cluster's own file\n"  # the node's view is whole


def test_a_privileged_pod_in_a_baseline_namespace_is_refused(cluster: Cluster):
    pod = tenant_pod(cluster, "root-shell", "sleep 600")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiError) as refused:
        create_as_editor(cluster, pod)
    assert refused.value.code == 403
    assert refused.value.status["message"] == (
        'pods "root-shell" is forbidden: violates PodSecurity "baseline:latest": privileged '
        '(container "main" must not set securityContext.privileged=true)')


def test_configmap_and_secret_volumes_show_their_files_at_their_mount_paths(cluster: Cluster):
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": NAMESPACE},
                 "data": {"mode": "fast", "level": "3"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": NAMESPACE},
              "stringData": {"password": "s3cret"}}
    volumes = [
        {"name": "config", "configMap": {"name": "app"}},
        {"name": "credentials", "secret": {"secretName": "db", "defaultMode": 0o440}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "bundle", "projected": {"sources": [
            {"configMap": {"name": "app", "items": [{"key": "level", "path": "level.txt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
        {"name": "scratch", "emptyDir": {}},
    ]
    command = "; ".join([
        'echo "mode=$(cat /etc/config/mode)"',
        'echo "password=$(cat /var/run/secrets/db/password)"',
        'echo "password_mode=$(stat -L -c %a /var/run/secrets/db/password)"',
        'echo "labels=$(cat /etc/podinfo/labels)"',
        'echo "level=$(cat /bundle/level.txt)"',
        'echo "namespace=$(cat /bundle/namespace)"',
        'echo written > /data/scratch/file && echo "scratch=$(cat /data/scratch/file)"',
        'touch /etc/config/x 2>/dev/null && echo config_writable=yes || echo config_writable=no',
    ])
    pod = tenant_pod(cluster, "reader", f"{{ {command}; }} > /tmp/r.tmp; mv /tmp/r.tmp /tmp/report; sleep 600",
                     volumes=volumes, securityContext={"fsGroup": 2000})
    pod["metadata"]["labels"] = {"app": "reader"}
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "config", "mountPath": "/etc/config"}, {"name": "credentials", "mountPath": "/var/run/secrets/db"},
        {"name": "info", "mountPath": "/etc/podinfo"}, {"name": "bundle", "mountPath": "/bundle"},
        {"name": "scratch", "mountPath": "/data/scratch"}]
    create_as_editor(cluster, configmap, secret, pod)
    cluster.api_call(lambda client: wait_running(client, NAMESPACE, "reader", timeout=30))
    assert report(cluster, "reader") == {
        "mode": "fast", "password": "s3cret", "password_mode": "440", "labels": 'app="reader"', "level": "3",
        "namespace": NAMESPACE, "scratch": "written", "config_writable": "no"}
    assert not Path("/etc/config").exists() and not Path("/bundle").exists()  # made in the pod's mount namespace only

    # A ConfigMap's change reaches the file, as the kubelet's sync does.
    configmap["data"]["mode"] = "slow"
    cluster.api_call(lambda client: client.replace({**configmap, "metadata": {**configmap["metadata"], "resourceVersion": None}}))
    assert wait_for(lambda: pod_exec(cluster, f"{NAMESPACE}/reader", "cat", "/etc/config/mode").stdout == "slow",
                    15, "the new ConfigMap value in the pod")


def test_run_as_non_root_with_uid_0_waits_with_the_kubelets_message(cluster: Cluster):
    pod = tenant_pod(cluster, "rooted", "sleep 600", securityContext={"runAsNonRoot": True})
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    create_as_editor(cluster, pod)

    async def waiting(client) -> dict:
        obj = await client.get("pods", "rooted", NAMESPACE)
        return ((obj.get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {}).get("waiting") or {}

    state = wait_for(lambda: cluster.api_call(waiting), 20, "the container to wait")
    uid = cluster.api_call(lambda client: client.get("pods", "rooted", NAMESPACE))["metadata"]["uid"]
    assert state == {"reason": "CreateContainerConfigError",
                     "message": f'container\'s runAsUser breaks non-root policy (pod: "rooted_{NAMESPACE}({uid})", '
                                "container: main)"}


def test_a_missing_configmap_keeps_the_pod_creating_until_it_exists(cluster: Cluster):
    pod = tenant_pod(cluster, "patient", "cat /etc/late/value > /tmp/report; sleep 600",
                     volumes=[{"name": "late", "configMap": {"name": "late"}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "late", "mountPath": "/etc/late"}]
    create_as_editor(cluster, pod)

    async def waiting(client) -> dict:
        obj = await client.get("pods", "patient", NAMESPACE)
        return ((obj.get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {}).get("waiting") or {}

    assert wait_for(lambda: cluster.api_call(waiting), 20, "the container to wait") == {
        "reason": "ContainerCreating", "message": 'MountVolume.SetUp failed for volume "late" : configmap "late" not found'}
    create_as_editor(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": NAMESPACE},
                               "data": {"value": "arrived"}})
    assert wait_for(lambda: (done := pod_exec(cluster, f"{NAMESPACE}/patient", "cat", "/tmp/report")).returncode == 0
                    and done.stdout, 20, "the container to start") == "arrived"


def test_a_projected_service_account_token_is_one_the_api_server_accepts(cluster: Cluster):
    mount = "/var/run/secrets/kubernetes.io/serviceaccount"
    pod = tenant_pod(cluster, "in-cluster", "sleep 600", volumes=[{"name": "kube-api-access-test", "projected": {
        "defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                          "fieldPath": "metadata.namespace"}}]}}]}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "kube-api-access-test", "mountPath": mount, "readOnly": True}]
    create_as_editor(cluster, pod)
    cluster.api_call(lambda client: wait_running(client, NAMESPACE, "in-cluster", timeout=30))
    read = wait_for(lambda: (done := pod_exec(cluster, f"{NAMESPACE}/in-cluster", "cat", f"{mount}/token",
                                             f"{mount}/namespace")).returncode == 0 and done, 20, "the token")
    token, namespace = read.stdout[:-len(NAMESPACE)], read.stdout[-len(NAMESPACE):]
    assert namespace == NAMESPACE and token.count(".") == 2  # a JWS, as the TokenRequest API signs it

    async def as_the_pod(_admin) -> ApiError:
        async with ApiClient(cluster.api.url, token, tls=cluster.api.tls) as client:
            with pytest.raises(ApiError) as refused:
                await client.list("secrets", NAMESPACE)
            return refused.value

    refused = cluster.api_call(as_the_pod)
    assert (refused.code, refused.status["message"]) == (403, (
        f'secrets is forbidden: User "system:serviceaccount:{NAMESPACE}:default" cannot list resource "secrets" '
        f'in API group "" in the namespace "{NAMESPACE}"'))


def test_a_plain_pod_reads_its_token_ca_and_namespace_where_kubernetes_puts_them(cluster: Cluster):
    create_as_editor(cluster, tenant_pod(cluster, "plain", "sleep 600"))
    obj = cluster.api_call(lambda client: wait_running(client, NAMESPACE, "plain", timeout=30))
    [volume] = [v for v in obj["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    mount = "/var/run/secrets/kubernetes.io/serviceaccount"
    read = wait_for(lambda: (done := pod_exec(cluster, f"{NAMESPACE}/plain", "cat", f"{mount}/ca.crt",
                                             f"{mount}/namespace")).returncode == 0 and done, 20, "the API access volume")
    assert read.stdout == cluster.api.ca.cert_pem.decode() + NAMESPACE
    token = pod_exec(cluster, f"{NAMESPACE}/plain", "cat", f"{mount}/token").stdout
    assert token.count(".") == 2 and volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 3607


def test_a_pod_cannot_see_or_signal_another_pods_processes(cluster: Cluster):
    create_as_editor(cluster, tenant_pod(cluster, "victim", "exec sleep 6011"))
    cluster.api_call(lambda client: wait_running(client, NAMESPACE, "victim", timeout=30))

    def victim_pid() -> int | None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "cmdline").read_bytes() == b"sleep\x006011\x00":
                        return int(entry.name)
                except OSError:
                    continue
        return None

    pid = wait_for(victim_pid, 20, "the victim's process on the node")
    command = (f"kill -0 {pid} 2>/dev/null && echo signal=delivered || echo signal=refused; "
               f"echo \"processes=$(ls /proc | grep -c '^[0-9]')\"")
    create_as_editor(cluster, tenant_pod(cluster, "attacker", f"{{ {command}; }} > /tmp/r.tmp; mv /tmp/r.tmp /tmp/report; sleep 600"))
    found = report(cluster, "attacker")
    assert found["signal"] == "refused"
    # Its init, its shell, the subshells and commands of that line; the node runs hundreds.
    assert int(found["processes"]) < 10 < len([p for p in Path("/proc").iterdir() if p.name.isdigit()])
