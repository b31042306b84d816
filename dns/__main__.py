"""`python -m podnet.dns ...` is `podnet dns ...`."""

import sys

from podnet.cli.main import app

app(["dns", *sys.argv[1:]], prog_name="python -m podnet.dns")
