"""batch/v1 Jobs through the real kubectl, as against kube-apiserver 1.31: `create job`, the generated
selector and labels, the columns of `get jobs`, the restartPolicy rule."""

from __future__ import annotations

import json
import re

import pytest
from support.kubectl import kubectl_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


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
