"""What a sweep leaves: sweep.json (every trial), sweep.md (best first), best.yaml (the
winning spec, ready to `jessy run`), plots/history.png and plots/importance.png."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..jsonio import write_json_atomic, write_text_atomic
from ..spec import Spec
from .objectives import METRICS
from .space import Space, with_values
from .study import SweepOptions, finished_trials

# spec fields that name files, relative to the spec's folder; best.yaml lives elsewhere
FILE_FIELDS = (("data", "train"), ("data", "validation"), ("evaluation", "held_out"),
               ("evaluation", "general"), ("model", "name_or_path"))


def trial_rows(study, folder: Path) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name.lower(),
            "abandoned": bool(attrs.get("abandoned")), "params": dict(t.params),
            # a pruned trial's value is Optuna's last intermediate one: not a score
            "values": list(t.values) if t.values is not None and t.state.name == "COMPLETE"
            else None,
            "metrics": attrs.get("metrics"), "run_dir": attrs.get("run_dir"),
            "status": attrs.get("status"), "winner": attrs.get("winner"),
            "backend": attrs.get("backend"),
            "fell_back_from": attrs.get("fell_back_from"), "pruned": attrs.get("pruned"),
            "last_step": attrs.get("last_step"), "planned_steps": attrs.get("planned_steps"),
            "failure": attrs.get("failure"), "seconds": attrs.get("seconds"),
            # judged on measured trials only: a pruned or failed one has no metrics to judge
            "feasible": all(v <= 0 for v in attrs["constraints"])
            if "constraints" in attrs and t.state.name == "COMPLETE" else None,
            "retry_of": attrs.get("retry_of"),
        })
    return rows


def best_numbers(study, options: SweepOptions) -> list[int]:
    """The best feasible trial (one objective) or the Pareto front (several)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not options.constraints or all(v <= 0 for v in t.user_attrs.get(
                "constraints", [1.0]))]
    if not done:
        return []
    if len(options.objectives) == 1:
        sign = 1 if METRICS[options.objectives[0]][0] == "minimize" else -1
        return [min(done, key=lambda t: sign * t.values[0]).number]
    signs = [1 if METRICS[n][0] == "minimize" else -1 for n in options.objectives]

    def dominates(a, b) -> bool:
        pa = [s * v for s, v in zip(signs, a.values, strict=True)]
        pb = [s * v for s, v in zip(signs, b.values, strict=True)]
        return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb

    return [t.number for t in done if not any(dominates(o, t) for o in done)]


def write_report(study, spec: Spec, space: Space, folder: Path,
                 options: SweepOptions) -> dict:
    rows = trial_rows(study, folder)
    best = best_numbers(study, options)
    report = {
        "spec": {"path": str(spec.source), "name": spec.name, "sha256": spec.digest()},
        "space": {"path": space.source, "dimensions": [
            {"path": d.path, **({"choices": list(d.choices)} if d.choices is not None else
                                {"low": d.low, "high": d.high, "log": d.log, "step": d.step})}
            for d in space.dimensions]},
        "backends": options.chain,
        "objectives": [{"metric": n, "direction": METRICS[n][0]} for n in options.objectives],
        "constraints": [str(c) for c in options.constraints],
        "finished": len(finished_trials(study)), "asked": options.trials,
        "best": best, "trials": rows,
    }
    write_json_atomic(folder / "sweep.json", report)
    if best:
        write_best_spec(spec, dict(study.trials[best[0]].params), folder / "best.yaml")
    write_text_atomic(folder / "sweep.md", render_markdown(report, options))
    _plots(study, folder, options, rows)
    return report


def write_best_spec(spec: Spec, values: dict, path: Path) -> None:
    """The spec as written, with the best values, its file paths rewritten for best.yaml's
    own folder so that `jessy run best.yaml` reads the same files."""
    data = with_values(spec.raw, values)
    for section, key in FILE_FIELDS:
        value = (data.get(section) or {}).get(key)
        if value is None:
            continue
        data[section][key] = ([_relocated(spec, v, path.parent) for v in value]
                              if isinstance(value, list) else _relocated(spec, value,
                                                                         path.parent))
    header = (f"# jessy sweep's best trial for {spec.source}\n# run it: jessy run {path.name}"
              "\n")
    write_text_atomic(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _relocated(spec: Spec, value, folder: Path):
    if not isinstance(value, str) or os.path.isabs(value) or ":" in value.split("/")[0]:
        return value  # absolute, or builtin:/hub-style names
    target = spec.base_dir / value
    if not target.exists():
        return value  # a hub id such as org/model
    return os.path.relpath(target.resolve(), folder.resolve())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def render_markdown(report: dict, options: SweepOptions) -> str:
    objectives = [o["metric"] for o in report["objectives"]]
    bounded = [c.metric for c in options.constraints if c.metric not in objectives]
    paths = [d["path"] for d in report["space"]["dimensions"]]
    order = {n: i for i, n in enumerate(report["best"])}
    signs = [1 if o["direction"] == "minimize" else -1 for o in report["objectives"]]

    def key(row):
        done = row["state"] == "complete"
        first = signs[0] * row["values"][0] if done else 0.0
        return (row["number"] not in order, not done, first, row["number"])

    lines = [f"# Sweep of {report['spec']['name']}", "",
             f"Spec: `{report['spec']['path']}`; space: `{report['space']['path']}`; backends: "
             f"{', '.join(report['backends'])}.", "",
             "Objective(s): " + ", ".join(f"{o['metric']} ({o['direction']})"
                                          for o in report["objectives"])
             + (f"; constraints: {', '.join(report['constraints'])}" if report["constraints"]
                else "") + ".", "",
             f"{report['finished']} of {report['asked']} trials finished; best: "
             f"{', '.join(map(str, report['best'])) or 'none yet'}"
             + (" (the Pareto front)" if len(objectives) > 1 else "") + ".", "",
             "| trial | state | " + " | ".join(paths) + " | " + " | ".join(objectives + bounded)
             + " | steps | backend | run | note |",
             "|" + "---|" * (len(paths) + len(objectives) + len(bounded) + 6)]
    for row in sorted(report["trials"], key=key):
        values = row["values"] or [None] * len(objectives)
        state = "abandoned" if row["abandoned"] else row["state"]
        if row["number"] in order:
            state = f"**best** {state}"
        note = ((row.get("pruned") or {}).get("reason") or row.get("failure") or
                (f"retry of {row['retry_of']}" if row.get("retry_of") is not None else ""))
        if row.get("feasible") is False:
            note = (note + "; " if note else "") + "violates a constraint"
        steps = f"{row['last_step']}/{row['planned_steps']}" if row.get("planned_steps") else ""
        lines.append("| " + " | ".join([
            str(row["number"]), state, *[_cell(row["params"].get(p)) for p in paths],
            *[_cell(v) for v in values],
            *[_cell((row.get("metrics") or {}).get(m)) for m in bounded], steps,
            _cell(row.get("winner") or row.get("backend")),
            f"`{row['run_dir']}`" if row.get("run_dir") else "", _cell(note)]) + " |")
    lines += ["", "![history](plots/history.png)", "", "![importance](plots/importance.png)",
              ""]
    return "\n".join(lines)


def _plots(study, folder: Path, options: SweepOptions, rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    metric = options.objectives[0]
    sign = 1 if METRICS[metric][0] == "minimize" else -1
    done = [r for r in rows if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if done:
        ax.plot([r["number"] for r in done], [r["values"][0] for r in done], "o",
                label=metric)
        best, running = [], None
        for r in done:
            v = r["values"][0]
            running = v if running is None or sign * v < sign * running else running
            best.append(running)
        ax.step([r["number"] for r in done], best, where="post", label="best so far")
    pruned = [r["number"] for r in rows if r["state"] == "pruned"]
    for number in pruned:
        ax.axvline(number, color="grey", alpha=0.3, linestyle=":")
    ax.set_xlabel("trial (dotted: pruned)")
    ax.set_ylabel(metric)
    if done:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(plots / "history.png", dpi=110)
    plt.close(fig)
    importances = {}
    if len(done) >= 2 and len(options.objectives) == 1:
        import optuna

        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):
            importances = {}
    fig, ax = plt.subplots(figsize=(6, 3))
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance for {metric} (fANOVA)")
    else:
        ax.text(0.5, 0.5, "needs two or more complete trials", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(plots / "importance.png", dpi=110)
    plt.close(fig)
