"""`python -m podnet.nodeagent.kubeproxy`: the same options as `podnet kubeproxy`."""

import typer

from podnet.cli.kubeproxy_cmd import kubeproxy

typer.run(kubeproxy)
