"""Which backends a run tries, in order: a named plan, or a backend plus its fallbacks."""

from __future__ import annotations

import yaml

from .paths import package_file


class PlanError(Exception):
    pass


def load_plans() -> dict:
    return yaml.safe_load(package_file("schemas", "plans.yaml").read_text(encoding="utf-8"))


def chain_for(backend: str | None = None, plan: str | None = None,
              fallback: list[str] | None = None, no_fallback: bool = False,
              spec_plans: dict | None = None) -> list[str]:
    """The ordered backends to try; a spec's own `plans` override the shipped ones."""
    plans = load_plans()
    plans["plans"] = {**plans["plans"], **(spec_plans or {})}
    if plan and backend:
        raise PlanError("give either --plan or --backend, not both")
    if plan:
        if plan not in plans["plans"]:
            raise PlanError(f"unknown plan {plan!r}; known: {', '.join(plans['plans'])}")
        return list(plans["plans"][plan])
    if not backend:
        raise PlanError("say which backend to run: --backend NAME or --plan A|B|C|D")
    if no_fallback:
        return [backend]
    rest = fallback if fallback is not None else plans["default_fallback"].get(backend, [])
    chain = [backend]
    for name in rest:
        if name not in chain:
            chain.append(name)
    return chain
