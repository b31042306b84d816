"""`python -m podnet.overlay.bgp ...` is `podnet bgp ...`."""

from podnet.cli.bgp_cmd import bgp_app

bgp_app(prog_name="python -m podnet.overlay.bgp")
