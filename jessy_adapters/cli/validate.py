"""`jessy validate SPEC`: the spec checked against the schema and its data files checked as
`jessy run` checks them, or every problem."""

from __future__ import annotations

import json

import click

from .common import _load_spec_and_sources_or_exit


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved spec as JSON.")
def validate(spec, as_json):
    """Check a spec and its data files; print every problem (exit 2) or the resolved spec.

    \b
    Example:
      jessy validate specs/examples/jessy-seed.yaml
    """
    loaded = _load_spec_and_sources_or_exit(spec)
    if as_json:
        click.echo(json.dumps(loaded.data, indent=2))
    else:
        click.echo(f"{spec}: valid ({loaded['method']}, model {loaded['model']['name_or_path']})")
