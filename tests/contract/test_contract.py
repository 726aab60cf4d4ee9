"""Every built-in backend passes the same contract (jessy_adapters.contract)."""

from __future__ import annotations

import pytest

from jessy_adapters.contract import *  # noqa: F401,F403
from jessy_adapters.plugins import load_registry

BACKENDS = load_registry().names()
pytestmark = pytest.mark.backend("contract")  # real trainings: not in the fast loop


@pytest.fixture(params=BACKENDS, scope="session")
def backend_name(request):
    return request.param


def test_every_registered_backend_is_covered_by_the_contract():
    """Meta-test: a backend registered through an entry point but missing here fails."""
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group="jessy")}
    assert declared <= set(BACKENDS), declared - set(BACKENDS)
    assert {"mlx", "unsloth", "llamafactory"} <= set(BACKENDS)
