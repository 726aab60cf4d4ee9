"""compare.json and compare.md: one row per backend, side by side, scored, with a verdict.

A backend that failed or was unavailable keeps its row (failure class and reason, no score);
one the comparison did not reach before an interruption is marked `not_run`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..jsonio import write_json_atomic, write_text_atomic
from .evaluation import tuned
from .figures import FIGURES, figures, last_attempt
from .run import Comparison
from .score import FORMULA, Scoring

NOT_RUN = "not_run"

LABELS = {"optimizer_steps": "optimizer steps (schedule)", "steps_done": "steps done",
          "first_eval_loss": "first eval loss",
          "final_eval_loss": "final eval loss", "final_train_loss": "final train loss",
          "trained_tokens": "trained tokens", "input_tokens": "input tokens",
          "seconds_per_step": "seconds per step",
          "input_tokens_per_second": "input tokens / s",
          "trained_tokens_per_second": "trained tokens / s", "peak_rss_gb": "peak RSS (GB)",
          "wall_s": "wall time (s)"}
EVAL_LABELS = {"held_out_accuracy": "held-out accuracy (tuned)",
               "general_accuracy": "general accuracy (tuned)",
               "validation_perplexity": "validation perplexity (tuned)",
               "validation_bleu": "validation BLEU (tuned)"}


def backend_row(name: str, comparison: Comparison, measured: tuple[dict, list[dict]] | None,
                evaluation: dict | None) -> dict:
    """MEASURED: the run's (run.json, events), as figures.read_run gives them; None when the
    backend has no run directory yet."""
    if measured is None:
        return {"backend": name, "status": NOT_RUN, "run_dir": None, "failure_class": None,
                "reason": "the comparison was interrupted before this backend ran",
                **dict.fromkeys(FIGURES), "eval": None}
    manifest, events = measured
    run_dir = comparison.run_dirs[name]
    failure = manifest.get("failure") or {}
    attempt = last_attempt(manifest, name)
    return {"backend": name, "status": manifest["status"],
            "run_dir": str(run_dir.relative_to(comparison.folder)),
            "failure_class": failure.get("kind"), "reason": failure.get("reason"),
            "device": attempt.get("device"),
            **figures(manifest, events, name),
            "eval": evaluation}


def build_report(comparison: Comparison, rows: list[dict], scoring: Scoring,
                 plots: list[str]) -> dict:
    """compare.json's content; each row gains its scores (None for a backend not scored)."""
    for row in rows:
        row["score"] = scoring.scores.get(row["backend"])
    not_run = [r["backend"] for r in rows if r["status"] == NOT_RUN]
    return {"spec": comparison.spec, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": not comparison.interrupted, "not_run": not_run,
            "scoring": scoring.to_json(), "plots": plots, "backends": rows}


def write_report(folder: Path, report: dict) -> None:
    write_json_atomic(folder / "compare.json", report)
    write_text_atomic(folder / "compare.md", render_markdown(report))


def render_markdown(report: dict) -> str:
    rows, scoring, spec = report["backends"], report["scoring"], report["spec"]
    lines = [f"# Comparison: {spec['name']}", "",
             f"Spec: `{spec['path']}` (sha256 {str(spec['sha256'])[:12]}); run directories "
             "under `runs/<backend>/`.", ""]
    if not report["complete"]:
        missing = (f"not run: {', '.join(report['not_run'])}" if report["not_run"]
                   else "the evaluation did not finish")
        lines += [f"**Partial**: interrupted ({missing}). Run the same command again to go "
                  "on.", ""]
    lines += _table(rows, scoring)
    lines += ["", "## Scoring", "",
              "Weights: " + ", ".join(f"{c} {w:g}" for c, w in scoring["weights"].items())
              + ". Ease of use and community support are not measurable from a run and are "
              "not scored.", "",
              f"Each criterion is normalised across the succeeded backends: {FORMULA}.", ""]
    for criterion, info in scoring["criteria"].items():
        lines.append(f"- {criterion}: {info['measure']} ({info['better']} is better)")
    for criterion, why in scoring["left_out"].items():
        lines.append(f"- {criterion}: not scored, {why}")
    lines += ["", f"**Verdict:** {scoring['verdict']}", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], scoring: dict) -> list[str]:
    out = ["| | " + " | ".join(r["backend"] for r in rows) + " |",
           "|---|" + "---|" * len(rows)]

    def line(label: str, cells) -> None:
        out.append(f"| {label} | " + " | ".join(_cell(c) for c in cells) + " |")

    line("status", [r["status"].replace("_", " ") for r in rows])
    if any(r["failure_class"] for r in rows):
        line("failure", [f"{r['failure_class']}: {r['reason']}" if r["failure_class"] else None
                         for r in rows])
    for key, label in LABELS.items():
        line(label, [r[key] for r in rows])
    if any(r["eval"] for r in rows):
        for key, label in EVAL_LABELS.items():
            line(label, [tuned(r["eval"]).get(key) for r in rows])
        if any((r["eval"] or {}).get("error") for r in rows):
            line("evaluation error", [(r["eval"] or {}).get("error") for r in rows])
    for criterion, info in scoring["criteria"].items():
        line(f"{criterion} score ({info['measure']})",
             [_fixed((r["score"] or {}).get(criterion), 2) for r in rows])
    if scoring["criteria"]:
        line("**total / 100**", [_fixed((r["score"] or {}).get("total"), 1) for r in rows])
    return out


def _fixed(value: float | None, decimals: int) -> str | None:
    return None if value is None else f"{value:.{decimals}f}"


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")[:160]
