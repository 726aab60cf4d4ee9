"""Unsloth backend for jessy-adapters: CUDA GPUs, and (slowly) CPU since 2026.10."""

from jessy_adapters import hookimpl

from .backend import UnslothBackend


@hookimpl
def register_backends(register):
    register(UnslothBackend)
