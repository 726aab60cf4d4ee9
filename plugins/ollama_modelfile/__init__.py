"""The seed's baseline as a backend: an Ollama Modelfile with a SYSTEM prompt, no training."""

from jessy_adapters import hookimpl

from .backend import OllamaModelfileBackend


@hookimpl
def register_backends(register):
    register(OllamaModelfileBackend)
