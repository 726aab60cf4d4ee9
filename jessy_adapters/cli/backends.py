"""`jessy backends`: every backend, whether it can run here, and why not."""

from __future__ import annotations

import json

import click

from .common import _registry


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--require-gpu", is_flag=True, help="Judge availability as if a GPU is required.")
def backends(as_json, require_gpu):
    """List backends: installed? environment? can run here? why not?

    \b
    Example:
      jessy backends --json
    """
    from ..envs import BackendEnv

    registry = _registry()
    rows = []
    for name in registry.names():
        backend = registry.get(name)
        env = BackendEnv(name)
        avail = backend.check(env, require_gpu)
        # "jessy": the backend runs in jessy's own interpreter, which exists; else its venv
        own = backend.environment == "own"
        rows.append({"name": name, "description": backend.description,
                     "plugin": registry.sources[name],
                     "environment": str(env.root) if own else backend.environment,
                     "environment_exists": env.exists() if own else True,
                     "can_run": avail.ok, "device": avail.device, "reason": avail.reason})
    for name, error in registry.load_errors.items():
        rows.append({"name": name, "plugin": name, "can_run": False,
                     "reason": f"plugin failed to load: {error}"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "yes" if row["can_run"] else "no "
        click.echo(f"{row['name']:<14} can run: {mark}  {row['reason']}")
