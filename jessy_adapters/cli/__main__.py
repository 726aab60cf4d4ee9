"""`python -m jessy_adapters.cli`: the same `jessy` command (tests and benchmarks run it so)."""

from . import cli

cli()
