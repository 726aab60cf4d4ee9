"""A third-party jessy backend: plain transformers' Trainer + PEFT LoRA.

Imported by jessy (through the `jessy` entry point), in jessy's environment: nothing here
imports torch, transformers or peft; train.py, which the backend runs, does.
"""

from jessy_adapters import hookimpl

from .backend import PeftExampleBackend


@hookimpl
def register_backends(register):
    register(PeftExampleBackend)
