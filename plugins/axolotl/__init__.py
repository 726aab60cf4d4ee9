"""Axolotl backend for jessy-adapters: one process, or many through torchrun (DDP/FSDP2/ZeRO)."""

from jessy_adapters import hookimpl

from .backend import AxolotlBackend


@hookimpl
def register_backends(register):
    register(AxolotlBackend)
