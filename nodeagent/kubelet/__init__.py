"""The node agent's kubelet API: the HTTP server the API server relays `exec`, `logs` (and more) to."""
