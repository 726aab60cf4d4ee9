"""`jessy compare SPEC --backends a,b,c`: a thin click command over jessy_adapters.compare.

Exit codes as in `common.py`: 0 when at least one backend succeeded, 1 when none did, 2 for bad
input (found before anything runs), 130 when interrupted (run the same command to go on).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import EXIT_FAILED, EXIT_INTERRUPTED, _load_spec_or_exit, _registry


@click.command("compare")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--backends", "backend_list", required=True, metavar="A,B,C",
              help="Backends to compare, run one after another in this order, each without "
                   "fallback.")
@click.option("--eval", "with_eval", is_flag=True,
              help="Then run `jessy eval` on every succeeded run (same prompts); quality is "
                   "scored from its held-out accuracy.")
@click.option("--weights", default=None, metavar="C=W,...",
              help="Criterion weights, replacing the defaults quality=35,speed=25,memory=20 "
                   "(a criterion left out is not scored).")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Parent of the compare-<spec name>/ folder (default: spec output.dir, "
                   "./runs).")
@click.option("--require-gpu", is_flag=True, help="Refuse backends without an accelerator.")
@click.option("--timeout", type=float, default=None, help="Seconds per backend.")
@click.option("--json", "as_json", is_flag=True, help="Print compare.json at the end.")
@click.pass_context
def compare(ctx, spec, backend_list, with_eval, weights, output, require_gpu, timeout, as_json):
    """Train SPEC on each backend in turn; write compare.json, compare.md and plots/.

    Each backend runs as `jessy run --backend X --no-fallback` would, into
    <output>/compare-<spec name>/runs/<backend>/. Failed and unavailable backends keep their
    row with the failure class and reason. Interrupted (Ctrl-C)? Run the same command again:
    finished backends are kept, the others run.

    \b
    Example:
      jessy compare specs/examples/quickstart.yaml --backends mlx,unsloth,axolotl
      jessy compare specs/examples/quickstart.yaml --backends mlx,unsloth --eval \\
          --weights quality=50,speed=30,memory=20
    """
    from ..compare import CompareError, WeightsError, compare_folder, parse_backends, parse_weights
    from ..compare import compare as run_comparison
    from ..run.runner import Runner

    try:
        parsed_weights = parse_weights(weights)
    except WeightsError as exc:
        raise click.BadParameter(str(exc), param_hint="--weights") from None
    loaded = _load_spec_or_exit(spec)
    # a caller (the tests) may hand in its own registry as ctx.obj["registry"]
    registry = (ctx.obj or {}).get("registry") or _registry()
    try:
        names = parse_backends(backend_list, registry.names())
    except CompareError as exc:
        raise click.BadParameter(str(exc), param_hint="--backends") from None
    def console(message: str) -> None:
        click.echo(message, err=True)

    runner = Runner(registry, console=console, timeout=timeout)
    folder = compare_folder(Path(output or loaded["output"]["dir"]), loaded)
    require = require_gpu or loaded["requirements"]["accelerator"] == "required"
    try:
        comparison, report = run_comparison(loaded, names, folder, runner, parsed_weights,
                                            with_eval, require, console)
    except CompareError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    click.echo(str(comparison.folder))
    click.echo(report["scoring"]["verdict"].replace("**", ""), err=True)
    if comparison.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not any(row["status"] == "succeeded" for row in report["backends"]):
        sys.exit(EXIT_FAILED)
