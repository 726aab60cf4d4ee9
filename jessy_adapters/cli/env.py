"""`jessy env create|list|remove`: one isolated environment per backend."""

from __future__ import annotations

import json

import click

from .common import _registry


@click.group()
def env():
    """Manage one isolated environment per backend.

    \b
    Example:
      jessy env create mlx
      jessy env list
    """


@env.command("create")
@click.argument("backend")
@click.option("--recreate", is_flag=True, help="Rebuild even if it exists.")
def env_create(backend, recreate):
    """Create BACKEND's virtual environment from its pinned requirements.

    A backend that runs in jessy's own interpreter (environment "jessy") has none to create.

    \b
    Example:
      jessy env create mlx
    """
    import sys

    from ..envs import BackendEnv, EnvError
    from ..plugins import RegistryError

    try:
        impl = _registry().get(backend)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    target = BackendEnv(backend)
    if impl.environment == "jessy":
        ready = impl.check(target)
        click.echo(f"{backend}: nothing to create: it runs in jessy's own interpreter "
                   f"({sys.executable}); check: {ready.reason}")
        return
    try:
        target.create(impl.pre_requirements, impl.requirements,
                      log=lambda m: click.echo(m, err=True), recreate=recreate,
                      uninstall=impl.uninstall)
    except EnvError as exc:
        raise click.ClickException(str(exc)) from None
    for note in impl.after_env_create(target):
        click.echo(f"note: {note}", err=True)
    click.echo(str(target.root))


@env.command("list")
@click.option("--json", "as_json", is_flag=True)
def env_list(as_json):
    """List the backend environments that exist.

    \b
    Example:
      jessy env list --json
    """
    from ..envs import list_envs

    rows = [{"backend": e.backend, "path": str(e.root), "created": e.info().get("created"),
             "requirements": e.info().get("requirements")} for e in list_envs()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['backend']:<14} {r['path']}  (created {r['created']})")
        if not rows:
            click.echo("no backend environments yet: jessy env create mlx")


@env.command("remove")
@click.argument("backend")
def env_remove(backend):
    """Delete BACKEND's environment.

    \b
    Example:
      jessy env remove mlx
    """
    from ..envs import BackendEnv

    removed = BackendEnv(backend).remove()
    click.echo(f"removed {backend}" if removed else f"no environment for {backend}")
