"""`jessy compare`: the same spec on several backends, one after another, side by side.

<output>/compare-<spec name>/ holds compare-state.json, compare.json, compare.md, plots/ and
runs/<backend>/<run-id>/ (each a normal run directory). The steps, one module each: run
(the backends, resumable), evaluation (`--eval`), figures (what each run measured), score
(the weighted method), report (json and markdown) and plots.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..run.runner import Runner
from ..spec import Spec
from .evaluation import evaluate_runs
from .figures import read_run
from .plots import plot_comparison
from .report import backend_row, build_report, write_report
from .run import CompareError, Comparison, compare_folder, parse_backends, run_backends
from .score import WeightsError, parse_weights, score

__all__ = ["CompareError", "Comparison", "WeightsError", "compare", "compare_folder",
           "parse_backends", "parse_weights"]


def compare(spec: Spec, backends: list[str], folder: Path, runner: Runner,
            weights: dict[str, float], with_eval: bool = False,
            require_accelerator: bool = False,
            console: Callable[[str], None] = print) -> tuple[Comparison, dict]:
    """Run (or resume) the comparison in FOLDER and write its report, partial when a Ctrl-C
    stopped it; returns the comparison and compare.json's content."""
    comparison = run_backends(spec, backends, folder, runner, require_accelerator, console)
    measured = {name: read_run(path, name) for name, path in comparison.run_dirs.items()}
    succeeded = {name: comparison.run_dirs[name] for name, (manifest, _) in measured.items()
                 if manifest["status"] == "succeeded"}
    evaluations: dict[str, dict] = {}
    if with_eval and not comparison.interrupted:
        try:
            evaluations = evaluate_runs(succeeded, console)
        except KeyboardInterrupt:
            console("[compare] interrupted during the evaluation; run the same command "
                    "again to finish it")
            comparison.interrupted = True
    rows = [backend_row(name, comparison, measured.get(name), evaluations.get(name))
            for name in backends]
    charts = plot_comparison({name: events for name, (_, events) in measured.items()},
                             comparison.folder / "plots")
    report = build_report(comparison, rows, score(rows, weights),
                          [str(p.relative_to(comparison.folder)) for p in charts])
    write_report(comparison.folder, report)
    return comparison, report
