"""The `jessy` command line: thin click commands over the core.

One module per command or command group; `common` holds what they share (exit codes, the
spec loaded or exit 2, option and output-folder checks, the registry). This module makes the
`cli` group and registers every command. Heavy modules are imported inside commands so
`jessy --help` stays fast.
"""

from __future__ import annotations

import atexit
import gc

import click

from .. import __version__
from ..sweep.command import sweep as sweep_command
from ..ui.command import ui as ui_command
from . import (
    backends,
    compare,
    data,
    env,
    export,
    import_,
    launch,
    model,
    plan,
    run,
    translate,
    validate,
)
from . import eval as eval_
from .common import EXIT_INTERRUPTED

# Registered first, so it runs after every other exit handler: the objects left then (the
# loss plot's matplotlib, jsonschema, plugins) are never collected one by one at shutdown.
# That final collection took 0.13-0.20 s of every `jessy run` (benchmarks/overhead.py).
atexit.register(gc.freeze)


class JessyGroup(click.Group):
    """Ctrl-C anywhere outside a run ends with exit 130 and one line, not click's
    "Aborted!" and exit 1 (a run finishes its run.json first: lifecycle.owning)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


# The commands of this package's modules (`cli.commands` keeps this order; --help sorts).
COMMANDS = (validate.validate, backends.backends, env.env, translate.translate, run.run,
            plan.plan, eval_.eval_cmd, export.export_cmd, launch.launch, model.model,
            data.data, compare.compare, import_.import_command)


@click.group(cls=JessyGroup, commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jessy")
def cli():
    """One training spec, many fine-tuning backends.

    \b
    Example:
      jessy validate specs/examples/quickstart.yaml
      jessy run --backend mlx specs/examples/quickstart.yaml
    """


# Commands that live in their own package (with the rest of that feature):
cli.add_command(sweep_command)
cli.add_command(ui_command)
