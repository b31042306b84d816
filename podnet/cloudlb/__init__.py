"""cloud-lb: an emulated cloud's load balancer, its own process (`podnet cloud-lb`), beside the cluster
as a cloud provider's is. It talks to the API server as any client does and to the nodes over their
nodePorts; nothing in the cluster imports it. `frontends` holds its decisions (pure), `balancer` the
process.
"""
