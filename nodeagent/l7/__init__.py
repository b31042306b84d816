"""L7 (HTTP) policy the Cilium way, pure: CiliumNetworkPolicy compilation, the HTTP rule matcher, the
verdict combined with Kubernetes NetworkPolicies, and the HTTP/1.1 request parser of the proxy that
enforces it."""
