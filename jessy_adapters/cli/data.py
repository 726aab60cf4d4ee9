"""`jessy data validate|prepare|stats`: the training file checked and split before a run.

Thin click commands over `datatools`; exit codes as in `common.py` (0 ok, 2 bad input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..data.rows import FORMATS
from .common import EXIT_BAD_INPUT

# Existence and kind (FIFO, directory, /dev/zero) are judged by `rows`, as at run time, so
# every command says the same thing about the same path.
_FILE = click.Path(path_type=Path)


class _ValRatio(click.ParamType):
    """A validation share in [0, 1): click's FloatRange lets NaN through (every comparison
    with NaN is false), and a NaN split would put no row, or every row, in validation."""

    name = "ratio"

    def convert(self, value, param, ctx):
        from ..data.tools import val_ratio_problem

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a number, got {value!r}", param, ctx)
        problem = val_ratio_problem(number)
        if problem:
            self.fail(problem, param, ctx)
        return number


def _echo_problems(problems, omitted: int, indent: str = "", hint: str = "") -> None:
    """At most MAX_REPORTED problems on stderr, then how many more: a binary file must not
    bury the terminal (or a log) under one line per garbage line."""
    from ..data.tools import MAX_REPORTED

    for problem in problems[:MAX_REPORTED]:
        click.echo(indent + problem.render(), err=True)
    more = omitted + max(0, len(problems) - MAX_REPORTED)
    if more:
        click.echo(f"{indent}... and {more:,} more problems{hint}", err=True)


def _row_options(f):
    """The options that say how to read a row: shared by every `data` command."""
    options = [
        click.option("--format", "fmt", default="prompt_response", show_default=True,
                     type=click.Choice(list(FORMATS)),
                     help="Row layout, as the spec's data.format."),
        click.option("--prompt-field", default="prompt", show_default=True),
        click.option("--response-field", default="response", show_default=True),
        click.option("--messages-field", default="messages", show_default=True),
        click.option("--text-field", default="text", show_default=True),
        click.option("--system-prompt", default=None,
                     help="System message added to chat rows (as the spec's "
                          "data.system_prompt)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _fields(prompt_field, response_field, messages_field, text_field) -> dict:
    from ..data.tools import make_fields

    return make_fields(prompt=prompt_field, response=response_field,
                       messages=messages_field, text=text_field)


def _tokenizer_options(f):
    """The tokenizer that measures rows, and the template it renders them with."""
    from ..templates import TEMPLATES

    f = click.option("--chat-template", default="auto", show_default=True,
                     type=click.Choice(["auto", *TEMPLATES]),
                     help="What renders each row for --tokenizer, as the spec's "
                          "model.chat_template (alpaca: the classic Alpaca prompt).")(f)
    return click.option("--tokenizer", type=click.Path(), default=None,
                        help="Model folder whose tokenizer and chat template measure each "
                             "row.")(f)


def _counter(tokenizer, fmt, fields, system_prompt, chat_template):
    """The tokenizer's counter, or exit 2 saying why it cannot be loaded."""
    if not tokenizer:
        return None
    from ..data.tools import DataToolError, TokenCounter

    try:
        return TokenCounter(tokenizer, fmt, fields, system_prompt, chat_template)
    except DataToolError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data():
    """Check, measure and split training data (JSONL) before a run.

    \b
    Example:
      jessy data validate examples/jessy_persona.jsonl
      jessy data prepare examples/jessy_persona.jsonl --out data/ --subset 200
      jessy data stats examples/jessy_persona.jsonl --json
    """


@data.command("validate")
@click.argument("file", type=_FILE)
@_row_options
@_tokenizer_options
@click.option("--max-seq-length", type=click.IntRange(min=1), default=None,
              help="Flag rows longer than this many templated tokens (needs --tokenizer).")
@click.option("--strict", is_flag=True,
              help="Duplicates and over-long rows are errors (exit 2), not warnings.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_cmd(file, fmt, prompt_field, response_field, messages_field, text_field,
                 system_prompt, tokenizer, chat_template, max_seq_length, strict, as_json):
    """Report every problem in FILE as file:line; exit 2 if any is an error.

    Malformed rows (bad JSON, not an object, missing, empty or non-string fields) are
    always errors. Exact and normalised duplicates (case, whitespace and punctuation
    ignored; the line of the first occurrence is named) and rows over --max-seq-length
    tokens are warnings, or errors with --strict. The file is streamed, never loaded.

    \b
    Example:
      jessy data validate examples/jessy_persona.jsonl
      jessy data validate train.jsonl --tokenizer ~/.cache/jessy/models/smollm2-135m-instruct \\
          --max-seq-length 512 --strict
    """
    from ..data.tools import MAX_KEPT_PROBLEMS, DataToolError, validate_file

    if (tokenizer is None) != (max_seq_length is None):
        raise click.UsageError("--tokenizer and --max-seq-length go together: the limit is "
                               "in the tokenizer's tokens")
    fields = _fields(prompt_field, response_field, messages_field, text_field)
    counter = _counter(tokenizer, fmt, fields, system_prompt, chat_template)
    try:
        report = validate_file(file, fmt, fields, strict=strict, counter=counter,
                               max_seq_length=max_seq_length)
    except DataToolError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _echo_problems(report.problems, report.omitted,
                       hint=f" (--json lists up to {MAX_KEPT_PROBLEMS:,})")
        click.echo(report.summary())
    if report.errors:
        sys.exit(EXIT_BAD_INPUT)


@data.command("prepare")
@click.argument("file", type=_FILE)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for train.jsonl, val.jsonl, the subsets and prepare.json.")
@click.option("--val-ratio", default=0.1, show_default=True,
              type=_ValRatio(), help="Share of rows for validation, from 0 up to (not "
              "including) 1.")
@click.option("--seed", default=42, show_default=True, type=int,
              help="Shuffle seed: the same seed gives the same bytes.")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Also write a pilot: the first N training rows and validation in the "
                   "same proportion (N=900 -> 900/100).")
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Drop exact and normalised duplicates and keep rows sharing a prompt on "
                   "one side of the split (no train/val overlap).")
@_row_options
def prepare_cmd(file, out_dir, val_ratio, seed, subset, dedup, fmt, prompt_field,
                response_field, messages_field, text_field, system_prompt):
    """Split FILE into seeded train/validation files (and a pilot subset) in --out.

    Each row is copied as it is in FILE; with --system-prompt rows are written as
    chat messages with that system message first. Refuses (exit 2, every file:line) when
    FILE has malformed rows. prepare.json records counts, seed, sha256 of input and outputs,
    the dropped duplicates and any train/validation prompt overlap.

    \b
    Example:
      jessy data prepare training/complete_training_data.jsonl --out data/ --subset 900
      jessy data prepare chats.jsonl --format messages --out data/ --val-ratio 0.05
    """
    from ..data.tools import DataToolError, PrepareRefused, prepare_file

    fields = _fields(prompt_field, response_field, messages_field, text_field)
    try:
        manifest, warnings = prepare_file(file, out_dir, fmt, fields, val_ratio=val_ratio,
                                          seed=seed, subset=subset, dedup=dedup,
                                          system_prompt=system_prompt)
    except PrepareRefused as exc:
        total = len(exc.problems) + exc.more
        click.echo(f"{total} problem(s) in {file}; nothing written:", err=True)
        _echo_problems(exc.problems, exc.more, indent="  ")
        sys.exit(EXIT_BAD_INPUT)
    except DataToolError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as exc:  # the output folder: not writable, disk full
        click.echo(f"error: cannot write to {out_dir}: {exc.strerror or exc}; nothing "
                   "written", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    c = manifest["counts"]
    for name, info in manifest["outputs"].items():
        click.echo(f"wrote {out_dir / name} ({info['rows']} rows)")
    click.echo(f"wrote {out_dir / 'prepare.json'}")
    line = (f"{c['kept']} rows -> train {c['train']}, val {c['val']} (seed {seed}); "
            f"{c['duplicates_dropped']} duplicates dropped, "
            f"{manifest['overlap']['prompts']} prompts in both train and val")
    if subset:
        line += f"; subset {c['train_subset']}/{c['val_subset']}"
    click.echo(line)


@data.command("stats")
@click.argument("file", type=_FILE)
@_row_options
@_tokenizer_options
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats_cmd(file, fmt, prompt_field, response_field, messages_field, text_field,
              system_prompt, tokenizer, chat_template, as_json):
    """Counts, length distributions (chars, and tokens with --tokenizer) and duplicates.

    Malformed rows are counted and skipped (jessy data validate names them).

    \b
    Example:
      jessy data stats examples/jessy_persona.jsonl
      jessy data stats train.jsonl --tokenizer ~/.cache/jessy/models/smollm2-135m-instruct --json
    """
    from ..data.tools import DataFileError, DataToolError, file_stats

    fields = _fields(prompt_field, response_field, messages_field, text_field)
    counter = _counter(tokenizer, fmt, fields, system_prompt, chat_template)
    try:
        stats = file_stats(file, fmt, fields, counter)
    except (DataToolError, DataFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        _print_stats(stats)
    if stats["malformed_rows"]:
        click.echo(f"note: {stats['malformed_rows']} malformed rows skipped "
                   f"(jessy data validate {file} names them)", err=True)
    if not stats["rows"]:
        click.echo(f"error: {file}: no usable examples", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _print_stats(stats: dict) -> None:
    d = stats["duplicates"]
    click.echo(f"{stats['file']}: {stats['rows']} rows ({stats['malformed_rows']} malformed, "
               f"{stats['blank_lines']} blank lines skipped)")
    click.echo(f"duplicates: {d['exact']} exact, {d['normalised']} normalised")
    table = [(f"{k} chars", v) for k, v in stats["chars"].items()]
    if stats["tokens"]:
        table += [(f"{k} tokens", v) for k, v in stats["tokens"].items()]
    click.echo(f"{'':<18}{'mean':>10}{'median':>10}{'p95':>10}{'max':>10}")
    for name, s in table:
        if s is None:
            click.echo(f"{name:<18}{'n/a':>10}")
            continue
        click.echo(f"{name:<18}{s['mean']:>10.1f}{s['median']:>10g}{s['p95']:>10}"
                   f"{s['max']:>10}")

