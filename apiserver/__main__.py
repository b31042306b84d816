"""`python -m podnet.apiserver`: the same options as `podnet apiserver`."""

import typer

from podnet.cli.apiserver_cmd import apiserver

typer.run(apiserver)
