"""`jessy import`: a backend's native config -> a canonical spec, every key accounted for.

The report (one line per key) goes to stderr, so stdout stays a spec that can be piped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT


def report_lines(ctx) -> list[str]:
    """What happened to each key of the source, the backend defaults applied, and notes
    (refused keys are listed apart, after these)."""
    lines = [f"mapped   {key} -> {path} = {value!r}" for key, path, value in ctx.mapped]
    lines += [f"dropped  {key}: {why}" for key, why in ctx.dropped]
    lines += [f"default  {path} = {value!r}: {why}" for path, value, why in ctx.defaults]
    lines += [f"note     {text}" for text in ctx.notes]
    return lines


def _absolute(path: str | None) -> str | None:
    """--model and --data as absolute paths: the spec may be written anywhere."""
    return str(Path(path).resolve()) if path else None


def in_schema_order(spec: dict) -> dict:
    """The spec's sections and keys in the schema's order, as a person would write them."""
    from ..spec import load_schema

    def order(node, schema):
        if not isinstance(node, dict) or "properties" not in schema:
            return node
        props = schema["properties"]
        known = [k for k in props if k in node] + [k for k in node if k not in props]
        return {k: order(node[k], props.get(k, {})) for k in known}

    return order(spec, load_schema("spec"))


@click.command(name="import")
@click.option("--from", "dialect", type=click.Choice(["axolotl", "llamafactory", "mlx"]),
              default=None, help="The file's dialect (default: recognised from its keys).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the spec here (default: print it on stdout).")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False),
              default=None, help="A local copy of the file's model (the spec points at it).")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="A local JSONL copy of the file's training data.")
@click.argument("native_file", type=click.Path(dir_okay=False))
def import_command(dialect, output, model_path, data_path, native_file):
    """Turn an Axolotl, LLaMA-Factory or mlx-lm config into a jessy spec.

    Each key is mapped (meaning converted), dropped (it cannot change training: outputs,
    logging, tracking) or refused (exit 2, by name): nothing is dropped silently. The report
    goes to stderr.

    \b
    Example:
      jessy import --from llamafactory llama3_lora_sft.yaml --model ./Llama-3-8B -o spec.yaml
    """
    import yaml

    from ..importers import ImportRefused, NativeFileError, import_file

    try:
        imported = import_file(native_file, dialect, _absolute(model_path), _absolute(data_path))
    except NativeFileError as exc:
        where = f"{native_file}:{exc.line}" if exc.line else native_file
        click.echo(f"{where}: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except ImportRefused as exc:
        if exc.ctx is not None:
            for line in report_lines(exc.ctx):
                click.echo(line, err=True)
        click.echo(f"{native_file}: not imported; {len(exc.problems)} key(s) jessy cannot "
                   "express:", err=True)
        for key, why in exc.problems:
            click.echo(f"  {key}: {why}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for line in report_lines(imported.ctx):
        click.echo(line, err=True)
    text = yaml.safe_dump(in_schema_order(imported.spec), sort_keys=False)
    if output:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            click.echo(f"{output}: cannot write the spec: {exc.strerror}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        click.echo(f"wrote {output} (check it: jessy validate {output})", err=True)
    else:
        click.echo(text, nl=False)
