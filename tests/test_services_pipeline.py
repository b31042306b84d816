"""NodePort traffic through two pure pipelines wired back to back: the node opens a connection into the
pod network from its own address (SNAT) or from the client's, and the answers find their way back."""

from podnet.overlay.pipeline.model import Deliver, Drop, ToHost, Tunnel
from podnet.overlay.pipeline.policyhook import PolicyDirection, Verdict
from podnet.overlay.wire import ipv4, tcp
from support.pipelines import N1, N2, A, B, after_hops, node, only, tcp_packet


def test_snatted_connection_to_a_remote_pod_and_its_answer_back_to_the_node():
    seen = []

    def policy(direction, flow):
        seen.append((direction, flow.src_ip))
        return Verdict(True, "test")

    n1, n2 = node(N1, A), node(N2, B, policy=policy)
    syn = tcp_packet("127.0.0.11", B.ip, 40000, 8080, tcp.TcpFlags.SYN)
    out = only(n1.from_node(syn, 0.0), Tunnel)
    assert out.node_address == N2.address
    delivered = only(n2.from_tunnel(N1.address, out.datagram, 0.0), Deliver)
    assert ipv4.decode(delivered.packet).src == "127.0.0.11"  # the pod sees the node address
    assert seen == [(PolicyDirection.INGRESS, "127.0.0.11")]
    answer = tcp_packet(B.ip, "127.0.0.11", 8080, 40000, tcp.TcpFlags.SYN | tcp.TcpFlags.ACK)
    back = only(n2.from_pod(B, answer, 0.0), Tunnel)
    assert back.node_address == N1.address and len(seen) == 1  # a reply meets no policy
    to_host = only(n1.from_tunnel(N2.address, back.datagram, 0.0), ToHost)
    assert to_host.packet == after_hops(answer, 1)  # node-2 routed it; node-1 is its destination


def test_the_pods_own_node_is_never_refused_by_its_ingress_policy():
    """NodePort traffic SNATed to the pod's own node comes from that node, which Kubernetes always lets
    through; SNATed to another node it is judged as any client is."""
    deny = node(N2, B, policy=lambda direction, flow: Verdict(False, "deny all"))
    own = tcp_packet("127.0.0.12", B.ip, 40000, 8080, tcp.TcpFlags.SYN)
    trace = []
    only(deny.from_node(own, 0.0, trace), Deliver)
    assert any(s.stage == "ingress-policy" and "own node" in s.detail for s in trace)
    other = only(node(N1, A).from_node(tcp_packet("127.0.0.11", B.ip, 40001, 8080, tcp.TcpFlags.SYN), 0.0), Tunnel)
    assert only(deny.from_tunnel(N1.address, other.datagram, 0.0), Drop).reason == "policy-ingress"


def test_client_address_to_a_local_pod_and_the_answer_to_the_host_side():
    n1 = node(N1, A)
    syn = tcp_packet("127.0.0.1", A.ip, 51000, 8080, tcp.TcpFlags.SYN)
    delivered = only(n1.from_node(syn, 0.0), Deliver)
    assert ipv4.decode(delivered.packet).src == "127.0.0.1"
    answer = tcp_packet(A.ip, "127.0.0.1", 8080, 51000, tcp.TcpFlags.SYN | tcp.TcpFlags.ACK)
    assert only(n1.from_pod(A, answer, 0.0), ToHost).packet == answer


def test_a_pods_own_connection_to_another_nodes_address_still_uses_the_host_bridge():
    n1 = node(N1, A)
    syn = tcp_packet(A.ip, "127.0.0.12", 42000, 6443, tcp.TcpFlags.SYN)
    assert isinstance(only(n1.from_pod(A, syn, 0.0), ToHost), ToHost)


def test_only_the_senders_own_address_passes_the_reverse_path_check():
    n1, n2 = node(N1, A), node(N2, B)
    forged = tcp_packet("127.0.0.13", B.ip, 40000, 8080, tcp.TcpFlags.SYN)
    datagram = only(n1.from_node(forged, 0.0), Tunnel).datagram
    assert only(n2.from_tunnel(N1.address, datagram, 0.0), Drop).reason == "vxlan-spoofed-inner-source"


def test_from_node_needs_a_route_and_a_pod():
    n1 = node(N1, A)
    assert (
        only(n1.from_node(tcp_packet("127.0.0.11", "10.244.1.99", 1, 2, tcp.TcpFlags.SYN), 0.0), Drop).reason
        == "no-such-pod"
    )
    assert (
        only(n1.from_node(tcp_packet("127.0.0.11", "10.245.0.1", 1, 2, tcp.TcpFlags.SYN), 0.0), Drop).reason
        == "no-route"
    )
