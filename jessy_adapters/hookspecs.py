"""The pluggy contract: one hook, returning backend classes (hatch's pattern).

A backend plugin is a module (or package) with::

    from jessy_adapters import hookimpl
    from jessy_adapters.backend import Backend

    class MyBackend(Backend): ...

    @hookimpl
    def register_backends(register):
        register(MyBackend)

and an entry point in its pyproject.toml::

    [project.entry-points.jessy]
    mybackend = "my_package"
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("jessy")
hookimpl = pluggy.HookimplMarker("jessy")


@hookspec
def register_backends(register):
    """Call ``register(BackendClass)`` once per backend this plugin provides.

    The class must subclass :class:`jessy_adapters.backend.Backend` and set a unique
    ``name``; the registry refuses duplicates so two plugins cannot shadow each other.
    """
