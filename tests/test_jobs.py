"""batch/v1 Jobs through the real kubectl, as against kube-apiserver 1.31: `create job`, the generated
selector and labels, the columns of `get jobs`, the restartPolicy rule."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.apiserver import ApiServerProcess
from support.kubectl import kubectl_server  # noqa: F401  (fixture)
from support.netns_pods import require_root, wait_for
from support.nodeagent import AgentProcess, Cluster, free_udp_port

pytestmark = [pytest.mark.slow, pytest.mark.host_network]


def _ok(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_create_job_generates_its_selector_and_prints_its_columns(kubectl_server):  # noqa: F811
    k = kubectl_server
    assert _ok(k.kubectl("create", "job", "pi", "--image=busybox", "--", "echo", "hi")) == "job.batch/pi created\n"
    job = json.loads(_ok(k.kubectl("get", "job", "pi", "-o", "json")))
    uid = job["metadata"]["uid"]
    generated = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "pi",
                 "controller-uid": uid, "job-name": "pi"}
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"] == generated
    assert job["metadata"]["labels"] == generated
    assert {k: job["spec"][k] for k in ("completions", "parallelism", "backoffLimit", "completionMode", "suspend")} == \
        {"completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": False}
    lines = _ok(k.kubectl("get", "jobs", "-o", "wide")).splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS",
                                                     "IMAGES", "SELECTOR"]
    assert re.match(rf"^pi\s+Running\s+0/1\s+\d+s\s+pi\s+busybox\s+batch.kubernetes.io/controller-uid={uid}$", lines[1])


def test_a_job_pod_may_not_restart_always(kubectl_server):  # noqa: F811
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "always"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    done = kubectl_server.kubectl("create", "-f", "-", input=json.dumps(job))
    assert done.returncode == 1
    assert done.stderr == ('The Job "always" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Always": '
                           'supported values: "OnFailure", "Never"\n')


def _job(name: str, *, completions: int, parallelism: int, backoff_limit: int = 6, command: list[str] | None = None,
         netns: bool = False) -> dict:
    container: dict = {"name": "main", "image": "busybox"}
    if command:
        container["command"] = command
    template: dict = {"spec": {"restartPolicy": "Never", "containers": [container]}}
    if netns:
        template["metadata"] = {"annotations": {"podnet.io/pod-mode": "netns"}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff_limit,
                     "template": template}}


@contextlib.contextmanager
def _one_node(tmp_path: Path, address: str, *agent_args: str) -> Iterator[Cluster]:
    """An API server with its controllers and one real node agent."""
    (tmp_path / "apiserver").mkdir()
    api = ApiServerProcess(tmp_path / "apiserver", f"sqlite:///{tmp_path / 'store.db'}", controllers=True)
    node = f"jb{secrets.token_hex(2)}-1"
    agent = AgentProcess(node, address, tmp_path, api.kubeconfig, free_udp_port(address), extra_args=agent_args)
    try:
        api.start()
        agent.start()
        yield Cluster(api, tmp_path, {node: agent})
    finally:
        agent.kill(signal.SIGTERM)
        api.kill()


def _kubectl(cluster: Cluster, *args: str, input: dict | None = None) -> str:
    done = subprocess.run(["kubectl", *args], input=None if input is None else json.dumps(input),
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, KUBECONFIG=str(cluster.api.kubeconfig), HOME=str(cluster.home)))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait_job(cluster: Cluster, name: str, condition: str) -> dict:
    def finished() -> dict | None:
        job = json.loads(_kubectl(cluster, "get", "job", name, "-o", "json"))
        types = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
        return job if condition in types else None

    return wait_for(finished, 60, f"job {name} {condition}", interval=0.3)


def test_virtual_pods_of_a_job_complete_at_once(tmp_path):
    with _one_node(tmp_path, "127.0.106.11") as cluster:
        _kubectl(cluster, "create", "-f", "-", input=_job("batch", completions=3, parallelism=2))
        job = _wait_job(cluster, "batch", "Complete")
        assert (job["status"]["succeeded"], job["status"].get("active", 0), job["status"].get("failed", 0)) == (3, 0, 0)
        assert job["status"]["completionTime"] >= job["status"]["startTime"]
        row = _kubectl(cluster, "get", "jobs").splitlines()[1]
        assert re.match(r"^batch\s+Complete\s+3/3\s+\d+s\s+\d+s$", row), row
        pods = json.loads(_kubectl(cluster, "get", "pods", "-l", "job-name=batch", "-o", "json"))["items"]
        assert len(pods) == 3 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
        assert all(p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed" for p in pods)


@pytest.mark.parametrize("command, outcome, counts", [
    (["sh", "-c", "echo done"], "Complete", (2, 0)),
    (["sh", "-c", "exit 3"], "Failed", (0, 2)),
])
def test_netns_pods_of_a_job_run_their_program_to_completion(tmp_path, command, outcome, counts):
    require_root()
    with _one_node(tmp_path, "127.0.107.11", "--pod-mode", "netns") as cluster:
        job = _job("work", completions=2, parallelism=1, backoff_limit=1, command=command, netns=True)
        _kubectl(cluster, "create", "-f", "-", input=job)
        finished = _wait_job(cluster, "work", outcome)
        assert (finished["status"].get("succeeded", 0), finished["status"].get("failed", 0)) == counts
        pods = json.loads(_kubectl(cluster, "get", "pods", "-l", "job-name=work", "-o", "json"))["items"]
        codes = sorted(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods)
        assert codes == ([0, 0] if outcome == "Complete" else [3, 3])


def test_on_failure_a_netns_job_pod_restarts_its_program_until_the_backoff_limit(tmp_path):
    # The pod never fails: its container restarts in it; those restarts count against backoffLimit.
    require_root()
    with _one_node(tmp_path, "127.0.230.61", "--pod-mode", "netns") as cluster:
        job = _job("retry", completions=1, parallelism=1, backoff_limit=2, command=["sh", "-c", "exit 3"], netns=True)
        job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        _kubectl(cluster, "create", "-f", "-", input=job)
        failed = _wait_job(cluster, "retry", "Failed")
        (condition,) = [c for c in failed["status"]["conditions"] if c["type"] == "Failed"]
        assert (condition["reason"], condition["message"]) == ("BackoffLimitExceeded",
                                                               "Job has reached the specified backoff limit")
        assert failed["status"].get("succeeded", 0) == 0
        assert failed["status"]["failed"] == 1  # the pod, deleted as it still ran, counts as failed


def test_virtual_pods_of_a_job_run_the_command_they_can_carry_out_and_complete_with_its_exit_code(tmp_path):
    with _one_node(tmp_path, "127.0.230.62") as cluster:
        web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"containers": [{"name": "web", "image": "agnhost", "ports": [{"containerPort": 80}]}]}}
        _kubectl(cluster, "create", "-f", "-", input=web)

        def web_ip() -> str | None:
            pod = json.loads(_kubectl(cluster, "get", "pod", "web", "-o", "json"))
            return (pod.get("status") or {}).get("podIP") if (pod.get("status") or {}).get("phase") == "Running" else None

        ip = wait_for(web_ip, 30, "pod web Running")
        # A probe that reaches its target: the pod's wget exits 0, the Job completes.
        _kubectl(cluster, "create", "-f", "-", input=_job("reach", completions=1, parallelism=1,
                                                            command=["wget", "-qO-", f"http://{ip}/hostname"]))
        _wait_job(cluster, "reach", "Complete")
        (pod,) = json.loads(_kubectl(cluster, "get", "pods", "-l", "job-name=reach", "-o", "json"))["items"]
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
        # One that is refused (port 81 is not served) exits 1: with Never the pod fails, and past the
        # backoff limit of 0 the Job.
        refused = _job("refused", completions=1, parallelism=1, backoff_limit=0,
                       command=["/agnhost", "connect", f"{ip}:81", "--timeout=2s"])
        _kubectl(cluster, "create", "-f", "-", input=refused)
        failed = _wait_job(cluster, "refused", "Failed")
        assert failed["status"].get("failed") == 1 and failed["status"].get("succeeded", 0) == 0
        (pod,) = json.loads(_kubectl(cluster, "get", "pods", "-l", "job-name=refused", "-o", "json"))["items"]
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 1, "Error")
        # With OnFailure the command runs again in the same pod; its restarts reach the backoff limit.
        again = _job("retried", completions=1, parallelism=1, backoff_limit=2,
                     command=["/agnhost", "connect", f"{ip}:81", "--timeout=2s"])
        again["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
        _kubectl(cluster, "create", "-f", "-", input=again)
        failed = _wait_job(cluster, "retried", "Failed")
        assert [c["reason"] for c in failed["status"]["conditions"] if c["type"] == "Failed"] == ["BackoffLimitExceeded"]
        assert failed["status"]["failed"] == 1
