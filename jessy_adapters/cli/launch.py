"""`jessy launch SPEC`: a task bundle for a launch target (Plan D: a cloud GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import _load_spec_or_exit, _registry


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--target", default="skypilot", show_default=True,
              help="A launch target plugin (SkyPilot ships with jessy).")
@click.option("--plan", default="A", show_default=True,
              help="The plan the remote machine runs (its chain of backends).")
@click.option("--gpu", "accelerator", default="A100", show_default=True,
              help="Accelerator type; resources.gpus_per_node gives the count.")
@click.option("--cloud", default=None, help="Pin a cloud (aws, gcp, azure, ...).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Bundle folder (default: launch/<spec name>).")
@click.option("--now", is_flag=True, help="Run `sky launch` right away (needs `jessy env "
                                          "create skypilot` and cloud credentials).")
def launch(spec, target, plan, accelerator, cloud, out, now):
    """Write a task that runs SPEC on a cloud GPU (Plan D) and print how to launch it.

    The bundle holds the spec, its data and jessy's source; SkyPilot provisions the machine,
    installs jessy and the plan's backends, runs `jessy run --plan PLAN` there, and tears the
    machine down when idle.

    \b
    Example:
      jessy launch --target skypilot --plan A specs/examples/jessy-seed.yaml
    """
    import subprocess

    from ..backend import LaunchTarget
    from ..envs import BackendEnv
    from ..plugins import RegistryError
    from ..run.runner import shell_line

    loaded = _load_spec_or_exit(spec)
    try:
        impl = _registry().get(target)
    except RegistryError as exc:
        raise click.UsageError(str(exc)) from None
    if not isinstance(impl, LaunchTarget):
        raise click.UsageError(f"{target} is a backend, not a launch target")
    folder = Path(out or Path("launch") / loaded["name"]).resolve()
    env = BackendEnv(target)
    try:
        files, command, notes = impl.bundle(loaded, folder, env, plan, accelerator, cloud)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {folder / impl.task_file} ({len(files)} files)", err=True)
    click.echo(shell_line(command, {}).rstrip("\n"))
    if now:
        if impl.environment == "own" and not env.exists():
            raise click.ClickException(f"no {target} environment: jessy env create {target}")
        sys.exit(subprocess.call(command, cwd=folder))
