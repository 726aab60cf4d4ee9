"""MLX (mlx-lm) backend for jessy-adapters: LoRA/QLoRA on Apple silicon, CPU on Linux."""

from jessy_adapters import hookimpl

from .backend import MLXBackend


@hookimpl
def register_backends(register):
    register(MLXBackend)
