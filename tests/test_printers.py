"""Table cells as kube-apiserver's printers compute them, and the Table documents the server answers."""

from __future__ import annotations

import calendar
import time

import pytest
from podnet.apiserver.tables import requested_version, to_table

from podnet.api import printers
from podnet.api.kinds import lookup

NOW = calendar.timegm(time.strptime("2026-01-02T00:00:00", "%Y-%m-%dT%H:%M:%S"))
CREATED = "2026-01-01T23:59:00Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (185, "3m5s"), (600, "10m"),
     (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600 + 60, "8h"), (49 * 3600, "2d1h"),
     (48 * 3600, "2d"), (10 * 86400, "10d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y")],
)
def test_human_duration(seconds, text):
    assert printers.human_duration(seconds) == text


def _pod(status: dict, spec: dict | None = None, **metadata) -> dict:
    return {"metadata": {"name": "p", "creationTimestamp": CREATED, **metadata},
            "spec": spec or {"containers": [{"name": "a"}, {"name": "b"}]}, "status": status}


RUNNING = {"running": {}}


@pytest.mark.parametrize(
    ("pod", "cells"),
    [
        (_pod({"phase": "Pending"}), ["p", "0/2", "Pending", "0", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
               "containerStatuses": [{"name": "a", "ready": True, "state": RUNNING, "restartCount": 2},
                                     {"name": "b", "ready": True, "state": RUNNING}]},
              {"containers": [{}, {}], "nodeName": "node-1", "readinessGates": [{"conditionType": "x"}]}),
         ["p", "2/2", "Running", "2", "60s", "10.244.1.5", "node-1", "<none>", "0/1"]),
        (_pod({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 4},
            {"name": "b", "ready": True, "state": RUNNING}]}),
         ["p", "1/2", "CrashLoopBackOff", "4", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Pending", "initContainerStatuses": [{"name": "init", "state": {"waiting": {"reason": "PodInitializing"}}}]},
              {"containers": [{}], "initContainers": [{"name": "init"}]}),
         ["p", "0/1", "Init:0/1", "0", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
            {"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
            {"name": "b", "ready": True, "state": RUNNING}]}),
         ["p", "1/2", "NotReady", "0", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Running"}, deletionTimestamp=CREATED),
         ["p", "0/2", "Terminating", "0", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": True, "state": RUNNING, "restartCount": 3,
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T23:55:00Z"}}}]}),
         ["p", "1/2", "Running", "3 (5m ago)", "60s", "<none>", "<none>", "<none>", "<none>"]),
        (_pod({"phase": "Failed", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137}}}]}),
         ["p", "0/2", "ExitCode:137", "0", "60s", "<none>", "<none>", "<none>", "<none>"]),
    ],
)
def test_pod_cells(pod, cells):
    assert printers.POD.row(pod, NOW) == cells


def test_node_cells():
    node = {"metadata": {"name": "n", "creationTimestamp": CREATED, "labels": {"kubernetes.io/role": "edge",
                                                                              "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}], "nodeInfo": {}}}
    assert printers.NODE.row(node, NOW) == ["n", "NotReady,SchedulingDisabled", "edge,worker", "60s", "", "<none>",
                                            "1.2.3.4", "<unknown>", "<unknown>", "<unknown>"]
    assert printers.NODE.row({"metadata": {"name": "m"}}, NOW)[1:3] == ["Unknown", "<none>"]


@pytest.mark.parametrize(
    ("spec", "status", "cells"),
    [
        ({"type": "LoadBalancer", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
         {"loadBalancer": {}}, ["10.96.0.9", "<pending>", "80:30080/TCP"]),
        ({"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalIPs": ["9.9.9.9"], "ports": []},
         {"loadBalancer": {"ingress": [{"ip": "127.0.1.2"}, {"hostname": "lb"}]}}, ["10.96.0.9", "127.0.1.2,lb,9.9.9.9", "<none>"]),
        ({"type": "ExternalName", "externalName": "example.com"}, {}, ["<none>", "example.com", "<none>"]),
    ],
)
def test_service_cells(spec, status, cells):
    row = printers.SERVICE.row({"metadata": {"name": "s"}, "spec": spec, "status": status}, NOW)
    assert [row[2], row[3], row[4]] == cells


def test_endpoints_and_endpoint_slices_list_three_and_count_the_rest():
    subsets = [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}]
    assert printers.ENDPOINTS.row({"metadata": {"name": "e"}, "subsets": subsets}, NOW)[1] == \
        "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."
    assert printers.ENDPOINTS.row({"metadata": {"name": "e"}}, NOW)[1] == "<none>"
    es = {"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"name": "x"}],
          "endpoints": [{"addresses": ["10.0.0.1"]}] * 4}
    assert printers.ENDPOINT_SLICE.row(es, NOW)[1:4] == ["IPv4", "x", "10.0.0.1,10.0.0.1,10.0.0.1 + 1 more..."]
    assert printers.ENDPOINT_SLICE.row({"metadata": {"name": "s"}}, NOW)[2:4] == ["<unset>", "<unset>"]


def test_selectors_are_written_as_labels_selector_string():
    selector = {"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                                     {"key": "d", "operator": "DoesNotExist"}]}
    assert printers.selector_string(selector) == "a=1,b=2,c in (x,y),!d"
    assert printers.format_label_selector({}) == "<none>"
    deployment = {"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {}, "template": {"spec": {
        "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}, "status": {"readyReplicas": 1}}
    assert printers.DEPLOYMENT.row(deployment, NOW)[1:] == ["1/3", 0, 0, "<unknown>", "a,b", "x,y", ""]
    assert printers.DEPLOYMENT.row({"metadata": {"name": "d"}}, NOW)[1] == "0/1"


def test_event_cells():
    event = {"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff", "message": " restarting \n",
             "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
             "source": {"component": "kubelet", "host": "node-1"}, "firstTimestamp": CREATED}
    assert printers.EVENT.row(event, NOW) == ["60s", "Warning", "BackOff", "pod/p", "spec.containers{a}",
                                              "kubelet, node-1", "restarting", "60s", 1, "e1"]


def test_table_rows_hide_wide_columns_unless_wide():
    pods = [{"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{}]}, "status": {"phase": "Pending"}}]
    narrow = printers.table_rows(printers.POD, pods, NOW, with_namespace=True)
    assert narrow == [["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["ns", "p", "0/1", "Pending", "0", "<unknown>"]]
    assert len(printers.table_rows(printers.POD, pods, NOW, wide=True)[0]) == 9
    assert printers.table_rows(None, pods, NOW)[0] == ["NAME", "CREATED AT"]


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", "v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json", None),
        ("application/json", None),
        ("", None),
    ],
)
def test_requested_table_version(accept, version):
    assert requested_version(accept) == version


def test_tables_of_a_list_and_of_one_object():
    pod = {"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"}, "spec": {"containers": [{}]},
           "status": {"phase": "Succeeded"}}
    listed = to_table(lookup("pods"), {"metadata": {"resourceVersion": "9", "continue": "c"}, "items": [pod]}, "v1", "Metadata", NOW)
    assert listed["kind"] == "Table" and listed["apiVersion"] == "meta.k8s.io/v1"
    assert listed["metadata"] == {"resourceVersion": "9", "continue": "c"}
    assert [c["name"] for c in listed["columnDefinitions"]][:2] == ["Name", "Ready"]
    assert listed["columnDefinitions"][5] | {"description": ""} == {"name": "IP", "type": "string", "format": "",
                                                                   "description": "", "priority": 1}
    row = listed["rows"][0]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod["metadata"]}
    assert row["conditions"][0]["reason"] == "Succeeded"
    single = to_table(lookup("pods"), pod, "v1beta1", "None", NOW)
    assert single["metadata"] == {"resourceVersion": "7"} and single["rows"][0]["object"] is None
    assert to_table(lookup("rs"), {"items": [{"metadata": {"name": "r"}}]}, "v1", "Object", NOW)["rows"][0]["cells"][:4] == ["r", 1, 0, 0]
