"""`jessy translate`: a backend's native files for a spec and the exact command; runs
nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, _load_spec_or_exit, _registry


@click.command()
@click.option("--backend", "-b", required=True, help="Backend to translate for.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write the native files here (default: a temporary preview folder).")
@click.argument("spec", type=click.Path(dir_okay=False))
def translate(backend, out, spec):
    """Write BACKEND's native config for SPEC and print the exact command; run nothing.

    \b
    Example:
      jessy translate --backend mlx specs/examples/quickstart.yaml --out /tmp/mlx-cfg
    """
    import tempfile

    from ..backend import RunInputs, TranslationRefused
    from ..data import DataError, prepare
    from ..envs import BackendEnv
    from ..models import ModelError, resolve_model
    from ..plugins import RegistryError
    from ..run.attempt import shell_line, write_native

    loaded = _load_spec_or_exit(spec)
    try:
        impl = _registry().get(backend)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"jessy-{backend}-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        model = resolve_model(loaded["model"]["name_or_path"], loaded.base_dir, build=False)
        data = prepare(loaded, out_dir / "data")
    except (ModelError, DataError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        result, env_vars = write_native(impl, loaded, RunInputs(model, data), out_dir.resolve(),
                                        BackendEnv(backend))
    except TranslationRefused as exc:
        click.echo(f"{backend} cannot honour this spec:", err=True)
        for r in exc.refusals:
            click.echo(f"  {r.spec_path}: {r.reason}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for rel in result.files:
        click.echo(f"wrote {out_dir / rel}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(shell_line(result.command, env_vars).rstrip("\n"))
