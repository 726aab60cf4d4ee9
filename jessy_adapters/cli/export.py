"""`jessy export RUN_DIR`: GGUF files and an Ollama Modelfile from a run."""

from __future__ import annotations

from pathlib import Path

import click

from .common import BadInput


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--gguf", default=None, help="Comma-separated: f16,q8_0,q4_k_m (default: the "
              "spec's export.gguf, else f16).")
@click.option("--ollama/--no-ollama", default=True, help="Write and validate a Modelfile.")
@click.option("--verify/--no-verify", default=True,
              help="Load each GGUF back and answer a question with its chat template.")
@click.option("--question", default=None, help="The verification question.")
def export_cmd(run_dir, gguf, ollama, verify, question):
    """Merge the adapter, convert to GGUF (llama.cpp's converter), write an Ollama Modelfile.

    Writes RUN_DIR/export/: merged/, model-<type>.gguf, Modelfile, export.json.

    \b
    Example:
      jessy export runs/20261124-200213-quickstart-0040 --gguf f16,q8_0
    """
    from ..export import ExportError, export_run
    from ..run.rundir import RunFolderError

    types = [t.strip() for t in gguf.split(",")] if gguf else None
    try:
        record = export_run(Path(run_dir).resolve(), types, ollama, verify, question)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    for g in record["gguf"]:
        line = f"{g['type']:<7} {Path(run_dir) / 'export' / g['path']}  {g['bytes'] / 1e6:.0f} MB"
        if "answer" in g:
            line += f"  answer: {g['answer'][:60]!r}"
        click.echo(line)
    if record["modelfile"]:
        click.echo(f"Modelfile: {Path(run_dir) / record['modelfile']['path']}")
        click.echo(f"import into Ollama: {record['modelfile']['import']}")
