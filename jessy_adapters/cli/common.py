"""What every command shares: exit codes, the spec loaded (and its data files checked) or
exit 2, input errors, option and output-folder checks, the plugin registry."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _load_spec_or_exit(path: str):
    from ..spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        click.echo(f"{len(exc.issues)} problem(s) in {path}:", err=True)
        for issue in exc.issues:
            click.echo("  " + issue.render(str(path)), err=True)
        sys.exit(EXIT_BAD_INPUT)


def _load_spec_and_sources_or_exit(path: str):
    """The spec, loaded, and its data files checked the way `jessy run` checks them before it
    prepares anything (`data.source_issues`: each a regular file, listed once, validation not
    also a training file), in the run's words; exit 2 otherwise.

    For the commands that read no rows (validate, plan): a spec whose data a run would refuse
    at once is not "valid". Only the files are looked at (stat, never open), so a FIFO or
    /dev/zero cannot block or flood the command; the rows are `jessy data validate`'s job.
    """
    from ..data import DataError, source_issues

    loaded = _load_spec_or_exit(path)
    issues = source_issues(loaded)
    if issues:
        click.echo(f"error: {DataError(issues)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    return loaded


class BadInput(click.ClickException):
    """A problem with what the user gave (a file, a folder): exit 2, like a spec error."""

    exit_code = EXIT_BAD_INPUT


def _finite(value, param):
    """click's ranges let NaN and infinity through; a number option must be a real number."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value}", param=param)
    return value


def _output_folder(path: Path) -> Path:
    """The folder runs go to, resolved once and said aloud; exit 2 before anything is
    prepared when it is a file or cannot be written (a read-only mount, another owner)."""
    import os

    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise click.UsageError(f"output folder {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.UsageError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise click.UsageError(f"output folder {path} is not writable")
    click.echo(f"output: {path}", err=True)
    return path


def _registry():
    from ..plugins import load_registry

    return load_registry()
