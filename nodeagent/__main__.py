"""`python -m podnet.nodeagent`: the same options as `podnet nodeagent`."""

import typer

from podnet.cli.nodeagent_cmd import nodeagent

typer.run(nodeagent)
