"""The node agent's RPC surface: every method its socket (`<state_dir>/agent.sock`) answers, by name.

The agent's handlers (nodeagent/agentrpc.py and the policy engine's), its callers (kube-proxy, the BGP
speaker, the kubelet API's exec commands) and the CLI all name methods through this one enum, so a method
is renamed in one place and a misspelt one fails at import rather than as a "no such method" at run time.
`StrEnum` members are the strings on the wire.
"""

from __future__ import annotations

from enum import StrEnum

# In COUNTERS' answer, the datagrams a node's tunnel sent to and took from one peer: these prefixes and
# the peer's underlay address ("tunnel.tx.to.127.0.0.12").
PEER_TX = "tunnel.tx.to."
PEER_RX = "tunnel.rx.from."


class AgentMethod(StrEnum):
    # the node and its dataplane's tables
    NODE_INFO = "node.info"  # -> name, address, pod_cidr, backend, encapsulation, ports, encryption, vtep_mac, status_port
    COUNTERS = "counters"  # -> {counter name: value}
    ROUTES_LIST = "routes.list"  # -> [{prefix, kind, next_hop, source}]
    CONNTRACK_LIST = "conntrack.list"  # -> [{original, reply, state, note, packets, expires_in}]
    PODS_LIST = "pods.list"  # -> [{namespace, name, ip, mac, counters, netns}]
    # what kube-proxy and the BGP speaker program
    SERVICES_APPLY = "services.apply"  # {mode, table} -> {rules, conntrack_cleared}
    SERVICES_GET = "services.get"  # {service?} -> {installed, rules, table, node_ports}
    NODEPORTS_APPLY = "nodeports.apply"  # {ports: [[port, protocol]]} -> {listening}
    ROUTES_APPLY = "routes.apply"  # {source, routes: [{prefix, next_hop}]} -> {routes}
    # what a virtual pod does from its own stack
    POD_HTTP = "pod.http"  # {namespace, pod, url, method, timeout} -> {ok, status, reason, headers, body}
    POD_CONNECT = "pod.connect"  # {namespace, pod, host, port, protocol, timeout} -> {ok, ...}
    POD_PING = "pod.ping"  # {namespace, pod, ip, count, interval, timeout} -> {ok, transmitted, received, rtts}
    POD_DIG = "pod.dig"  # {namespace, pod, name, type, ...} -> the answer, as dig prints it
    POD_SEND_UDP = "pod.send_udp"  # {namespace, pod, dst, port, size, seconds} -> {sent, seconds}
    POD_TCP_TRANSFER = "pod.tcp_transfer"  # {namespace, pod, dst, port, bytes, hold, timeout} -> {bytes, echoed, seconds}
    POD_EXEC_COMMAND = "pod.exec_command"  # {namespace, pod, argv} -> {argv, env} to run in a netns pod's sandbox, or None
    # probes and what they saw
    PROBE = "probe"  # {src: "ns/name", dst, port, protocol, timeout} -> {ok, reason, dropped?}
    TRACE = "trace"  # as probe -> [stage]
    TRACE_WATCH = "trace.watch"  # {protocol, src, dst, port | matches, timeout} -> [stage]
    CAPTURE = "capture"  # {count, seconds, decrypted} -> streams captured datagrams (decrypted: inside WireGuard)
    # failures on purpose
    FAULTS_PARTITION = "faults.partition"  # {peer, drop} -> {partitioned}
    FAULTS_PARTITIONS = "faults.partitions"  # -> {partitioned}
    # the NetworkPolicy engine's (nodeagent/netpol.py)
    FLOWS = "flows"  # {verdict, limit, follow} -> streams flow records
    POLICY_STATUS = "policy.status"  # -> what the node enforces
    # the podnet-cni plugin's (nodeagent/cniserver.py): attachments of namespaces a CNI runtime made
    CNI_ADD = "cni.add"  # {container_id, ifname, netns, namespace, name} -> attachment (podnet.cni.spec.Attachment)
    CNI_CHECK = "cni.check"  # {container_id, ifname, netns, prev_result} -> {problems}
    CNI_DEL = "cni.del"  # {container_id, ifname} -> {released}
    CNI_GC = "cni.gc"  # {valid: [[container_id, ifname]]} -> {removed: [[container_id, ifname]]}
    CNI_STATUS = "cni.status"  # -> {ready, reason}
    CNI_RESULT = "cni.result"  # {namespace, pod} -> the CNI result of a netns pod's network (None: not one)
    CNI_LIST = "cni.list"  # -> [{container_id, ifname, netns, namespace, name, address}]
