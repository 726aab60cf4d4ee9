"""`jessy sweep`: hyper-parameter search over spec paths, each trial an ordinary run.

<output>/sweep-<spec name>/ holds study.db (the Optuna study: the sweep resumes from it),
trials/NNNN/<run-id>/ (run directories), sweep.json, sweep.md, best.yaml and plots/. One
module per step: space (what to search, checked against the schema), objectives (what to
optimise, where each metric is read), study (the trials, pruning, resuming) and report.
"""

from __future__ import annotations

import importlib

# name -> module: imported on first use, so registering the command keeps `jessy --help` fast
_EXPORTS = {"METRICS": "objectives", "ObjectiveError": "objectives",
            "parse_constraint": "objectives", "write_report": "report", "SpaceError": "space",
            "load_space": "space", "SweepError": "study", "SweepOptions": "study",
            "run_sweep": "study", "sweep_folder": "study"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
