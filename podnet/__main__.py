from podnet.cli.main import run

run()
