"""The plugin manager: entry points in group `jessy` (built-ins use the same route).

JESSY_LOAD_PLUGINS (comma-separated entry-point names) restricts which plugins load,
like llm's LLM_LOAD_PLUGINS; an empty value loads none.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .backend import ENVIRONMENTS, PRODUCES, Backend, LaunchTarget


class RegistryError(Exception):
    pass


class Registry:
    """Backend classes by name; refuses duplicates so no plugin silently shadows another."""

    def __init__(self) -> None:
        self.backends: dict[str, type[Backend]] = {}
        self.sources: dict[str, str] = {}
        self.load_errors: dict[str, str] = {}

    def register(self, cls: type[Backend], source: str = "?") -> None:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise RegistryError(f"{source}: {cls!r} is not a jessy_adapters.backend.Backend")
        name = getattr(cls, "name", None)
        if not name:
            raise RegistryError(f"{source}: backend class {cls.__name__} has no name")
        if cls.environment not in ENVIRONMENTS:
            raise RegistryError(f"{source}: backend {name!r} declares environment "
                                f"{cls.environment!r}; expected one of {', '.join(ENVIRONMENTS)}")
        if cls.produces not in PRODUCES:
            raise RegistryError(f"{source}: backend {name!r} declares produces "
                                f"{cls.produces!r}; expected one of {', '.join(PRODUCES)}")
        if issubclass(cls, LaunchTarget) and not getattr(cls, "task_file", None):
            raise RegistryError(f"{source}: launch target {name!r} has no task_file (the "
                                "bundle's file its command launches)")
        if name in self.backends:
            raise RegistryError(f"backend {name!r} registered twice ({self.sources[name]} "
                                f"and {source})")
        self.backends[name] = cls
        self.sources[name] = source

    def get(self, name: str) -> Backend:
        try:
            return self.backends[name]()
        except KeyError:
            known = ", ".join(sorted(self.backends)) or "none"
            raise RegistryError(f"no backend named {name!r} is installed (installed: {known})"
                                ) from None

    def names(self) -> list[str]:
        return sorted(self.backends)


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("jessy")
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(extra_plugins: tuple = ()) -> Registry:
    """Load entry-point plugins (filtered by JESSY_LOAD_PLUGINS), then `extra_plugins`."""
    pm = make_manager()
    registry = Registry()
    allow = os.environ.get("JESSY_LOAD_PLUGINS")
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    for ep in entry_points(group="jessy"):
        if allowed is not None and ep.name not in allowed:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break the CLI
            registry.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if pm.is_registered(module):
            continue
        pm.register(module, name=ep.name)
    for plugin in extra_plugins:
        pm.register(plugin)
    for impl in pm.hook.register_backends.get_hookimpls():
        source = impl.plugin_name
        try:
            impl.function(register=lambda cls, _s=source: registry.register(cls, _s))
        except Exception as exc:  # one plugin's bad declaration must not hide the others
            registry.load_errors[source] = f"{type(exc).__name__}: {exc}"
    return registry
