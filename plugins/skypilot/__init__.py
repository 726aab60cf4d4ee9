"""SkyPilot launch target for jessy-adapters: Plan D, the same spec on a cloud GPU."""

from jessy_adapters import hookimpl

from .backend import SkyPilotBackend


@hookimpl
def register_backends(register):
    register(SkyPilotBackend)
