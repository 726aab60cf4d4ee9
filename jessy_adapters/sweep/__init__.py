"""`jessy sweep`: hyper-parameter search over spec paths, each trial an ordinary run.

<output>/sweep-<spec name>/ holds study.db (the Optuna study: the sweep resumes from it),
trials/NNNN/<run-id>/ (run directories), sweep.json, sweep.md, best.yaml and plots/. One
module per step: space (what to search, checked against the schema), objectives (what to
optimise, where each metric is read), study (the trials, pruning, resuming) and report.
"""

from __future__ import annotations

from .objectives import METRICS, ObjectiveError, parse_constraint
from .report import write_report
from .space import SpaceError, load_space
from .study import SweepError, SweepOptions, run_sweep, sweep_folder

__all__ = ["METRICS", "ObjectiveError", "SpaceError", "SweepError", "SweepOptions",
           "load_space", "parse_constraint", "run_sweep", "sweep_folder", "write_report"]
