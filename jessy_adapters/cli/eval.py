"""`jessy eval RUN_DIR`: a run's adapter against its base model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import BadInput


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--held-out", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSONL of {prompt, expected: [..]} (default: the spec's evaluation.held_out).")
@click.option("--general", type=click.Path(dir_okay=False, exists=True), default=None,
              help="General-knowledge JSONL, to detect forgetting.")
@click.option("--max-new-tokens", type=int, default=48)
@click.option("--limit", type=int, default=None, help="Only the first N questions of each set.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(run_dir, held_out, general, max_new_tokens, limit, as_json):
    """Evaluate a run's adapter against its base model: accuracy, perplexity, BLEU.

    Writes eval.json, eval.md and plots/eval.png into RUN_DIR.

    \b
    Example:
      jessy eval runs/20261124-200213-quickstart-0040
    """
    from ..evaluate import evaluate_run
    from ..run.rundir import RunFolderError

    try:
        r = evaluate_run(Path(run_dir).resolve(), held_out, general, max_new_tokens, limit)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    b, t = r["models"]["base"], r["models"]["tuned"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    click.echo(f"{'':<28}{'base':>10}{'tuned':>10}")
    click.echo(f"{'held-out persona accuracy':<28}{pct(b['held_out_accuracy']):>10}"
               f"{pct(t['held_out_accuracy']):>10}")
    click.echo(f"{'general accuracy':<28}{pct(b['general_accuracy']):>10}"
               f"{pct(t['general_accuracy']):>10}")
    for key, name in (("validation_perplexity", "validation perplexity"),
                      ("validation_bleu", "validation BLEU")):
        bv, tv = b[key], t[key]
        click.echo(f"{name:<28}{'n/a' if bv is None else f'{bv:.2f}':>10}"
                   f"{'n/a' if tv is None else f'{tv:.2f}':>10}")
    click.echo(f"report: {Path(run_dir) / 'eval.md'}")
