"""`python -m podnet.nodeagent.kubeproxy`: the same options as `podnet kubeproxy`, parsed without typer's
parser so that a restarted kube-proxy is syncing as soon as possible (see `podnet.cli.plainargs`)."""

from podnet.cli import plainargs
from podnet.cli.kubeproxy_cmd import kubeproxy

plainargs.run(kubeproxy)
