"""LLaMA-Factory backend for jessy-adapters."""

from jessy_adapters import hookimpl

from .backend import LlamaFactoryBackend


@hookimpl
def register_backends(register):
    register(LlamaFactoryBackend)
