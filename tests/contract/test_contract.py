"""Every built-in backend passes the same contract: the tests of jessy_adapters.contract with
the fixtures of jessy_adapters.testing, exactly what `pytest --jessy-backend NAME` (the
pytest plugin) runs for a third-party backend (tests/test_third_party_plugin.py)."""

from __future__ import annotations

import pytest

from jessy_adapters.contract import *  # noqa: F401,F403
from jessy_adapters.plugins import load_registry
from jessy_adapters.testing.fixtures import backend_name_fixture

BACKENDS = load_registry().names()
pytestmark = pytest.mark.backend("contract")  # real trainings: not in the fast loop

backend_name = backend_name_fixture(BACKENDS)


def test_every_registered_backend_is_covered_by_the_contract():
    """Meta-test: a backend registered through an entry point but missing here fails."""
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group="jessy")}
    assert declared <= set(BACKENDS), declared - set(BACKENDS)
    assert {"mlx", "unsloth", "llamafactory"} <= set(BACKENDS)
