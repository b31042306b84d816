"""Network namespaces as the host sees them: what each is named (`names`, pure) and the `ip` commands
that list and delete them (`ip`). The node agent's netns pods, the hosts-as-namespaces layout and
`podnet clean` all name namespaces through here.
"""
