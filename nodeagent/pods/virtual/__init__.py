"""Virtual pods: one userspace network stack per pod, pure (no sockets, no clock, no event loop).

- `stack.PodStack`: the pod. IPv4 packets in (`receive`), IPv4 packets out, timers as deadlines
  (`next_deadline`, `poll`), outbound operations (`open_tcp`, `connect`, `http_get`, `udp_exchange`,
  `ping`) whose outcome comes from `take_events`.
- `tcp.TcpConnection`: the TCP state machine, every transition in `tcp.TRANSITIONS`.
- `agnhost`: what each declared containerPort answers (agnhost netexec's HTTP and UDP behaviour).
- `client`: the outbound operations and their events and results.
- `ratelimit`: Linux's per-destination limit on the ICMP errors a pod sends (1/s, burst 6).
- `resolver`: the pod's stub resolver, with the resolv.conf of a ClusterFirst pod (search path, ndots:5);
  `nodeagent/poddns.py` carries its queries from the pod to the cluster DNS.

A host adapter does, per pod:

    ports = [port for c in pod["spec"]["containers"] for port in c.get("ports", [])]
    stack = PodStack("default/a", "default", "10.244.1.5", mac, gateway_mac, ports, "a")
    send(stack.receive(packet, loop.time()))        # each packet the pipeline delivers to the pod
    send(stack.poll(loop.time()))                   # at stack.next_deadline(), and after starting an operation
    op = stack.http_get("http://10.244.2.7/hostname", loop.time()); send(stack.poll(loop.time()))
    for event in stack.take_events(): ...           # Completed(op, HttpResponse) or Failed(op, reason)
"""
