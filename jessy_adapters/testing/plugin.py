"""The pytest plugin: `pytest --jessy-backend NAME` runs jessy's backend contract on NAME.

Registered through the `pytest11` entry point `jessy`, so installing jessy installs it; a
session that names no backend (no `--jessy-backend`, no `jessy_backends` ini value) gets
only the option itself: no tests, no fixtures, no hooks that act. Asked, it

- registers the contract's fixtures (`jessy_adapters.testing.fixtures`) and a session-scoped
  `backend_name` fixture with one parameter per named backend;
- adds the contract module (`jessy_adapters.contract`) to what the session collects, with
  pytest's assertion rewriting, so its tests run once for each backend.

Without plugin autoloading (PYTEST_DISABLE_PLUGIN_AUTOLOAD), load it with
`-p jessy_adapters.testing.plugin`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

OPTION = "--jessy-backend"
INI = "jessy_backends"
CONTRACT = "jessy_adapters.contract"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jessy", "jessy backend contract")
    group.addoption(OPTION, action="append", dest="jessy_backends", default=[], metavar="NAME",
                    help="run jessy's backend contract on this installed backend (repeat the "
                         "option, or separate names by commas, for several)")
    parser.addini(INI, "backends to run jessy's backend contract on, one a line (what "
                       f"{OPTION} names wins)", type="linelist", default=[])


def selected_backends(config: pytest.Config) -> list[str]:
    """The backends this session runs the contract on: the option's, else the ini's."""
    given = config.getoption("jessy_backends", default=None) or config.getini(INI) or []
    names: list[str] = []
    for value in given:
        for name in str(value).split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return names


def contract_path() -> Path:
    """The contract module's file, found without importing it (so pytest can rewrite it)."""
    return Path(importlib.util.find_spec(CONTRACT).origin)


def pytest_configure(config: pytest.Config) -> None:
    names = selected_backends(config)
    if not names:
        return
    from . import fixtures

    if CONTRACT not in sys.modules:
        pytest.register_assert_rewrite(CONTRACT)
    selected = types.ModuleType("jessy_adapters.testing.selected")
    selected.backend_name = fixtures.backend_name_fixture(names)
    config.pluginmanager.register(fixtures, "jessy-contract-fixtures")
    config.pluginmanager.register(selected, "jessy-contract-backends")
    path = str(contract_path())
    if not any(Path(arg.split("::")[0]).resolve() == Path(path).resolve()
               for arg in config.args):
        config.args.append(path)


def pytest_report_header(config: pytest.Config) -> str | None:
    names = selected_backends(config)
    return f"jessy contract: {', '.join(names)} ({contract_path()})" if names else None
