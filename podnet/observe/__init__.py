"""What podnet shows of a running cluster, for every front end (the CLI's `matrix`, `explain`, `flows`,
`trace`, `probe`; the web UI): the API objects the policies read, probes and traces through the node
agents, and the flow logs. Errors a user can act on are `ObserveError`s with the message to show."""


class ObserveError(Exception):
    """A request that cannot be answered as asked (no such pod, a pod not Running, a bad destination)."""
