"""The controllers that run inside the API server process (or beside it): they use only the API, through
`podnet.client`, exactly as a separate controller-manager would.

`manager.run_all(client, config)` runs them all until cancelled. The pure decisions live in `allocators`,
`scheduling`, `endpointslices`, `nodelifecycle`, `replicasets`, `deployments`, `statefulsets`, `daemonsets`
and `garbagecollection`; the loops in `loops`, `workloads` and `podsets`, over `runner`. This package
imports nothing itself, so a pure decision module loads without asyncio or the API client.
"""
